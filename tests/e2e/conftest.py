"""Live services for end-to-end tests: real uvicorn, real Celery workers, real PostgreSQL and Redis (or the
embedded default, tests/conftest.py's ``embedded_service``: SQLite and the filesystem broker), driven with the
official `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.reliability.servers import PrivateRedis
from tests.support import LiveService, create_database, service_env


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory, tiny_model_dir) -> Iterator[LiveService]:
    """The production topology: its own database on the shared PostgreSQL and a private Redis (the shared
    server's db numbers are too few for parallel sessions)."""
    url, drop = create_database("openrft_e2e")
    redis = PrivateRedis(tmp_path_factory.mktemp("e2e-redis"))
    redis.start()
    home = tmp_path_factory.mktemp("e2e-pg-home")
    svc = LiveService(home=home, env={})
    svc.env = service_env(
        home, database_url=url, redis_url=redis.url, api_key=svc.api_key,
        extra={
            "OPENRFT_BASE_MODELS": json.dumps({"tiny-test": str(tiny_model_dir)}),
            "OPENRFT_JOB_LEASE_SECONDS": "20",
        },
    )  # fmt: skip
    try:
        svc.start_api()
        svc.start_worker("default", name="default", beat=True)
        svc.start_worker("gpu", name="gpu", beat=False)
        yield svc
    except BaseException:
        print(svc.logs())
        raise
    finally:
        svc.stop()
        redis.stop()
        drop()
