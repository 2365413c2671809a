"""Live services for end-to-end tests: real uvicorn, real Celery workers, real PostgreSQL and Redis (or the
embedded default: SQLite and the filesystem broker), driven with the official `openai` SDK."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LiveService, create_database, service_env


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url, drop = create_database("openrft_e2e")
    try:
        yield url
    finally:
        drop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    db = random.randint(1, 15)
    url = f"redis://127.0.0.1:6379/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def _extra_env(tiny_model_dir: Path) -> dict[str, str]:
    return {
        "OPENRFT_BASE_MODELS": json.dumps({"tiny-test": str(tiny_model_dir)}),
        "OPENRFT_JOB_LEASE_SECONDS": "20",
    }


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory, pg_url, redis_url, tiny_model_dir) -> Iterator[LiveService]:
    home = tmp_path_factory.mktemp("e2e-pg-home")
    svc = LiveService(home=home, env={})
    svc.env = service_env(
        home, database_url=pg_url, redis_url=redis_url, api_key=svc.api_key, extra=_extra_env(tiny_model_dir)
    )
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


@pytest.fixture(scope="module")
def embedded_service(tmp_path_factory, tiny_model_dir) -> Iterator[LiveService]:
    """`openrft serve` as a user starts it: SQLite, filesystem broker, workers spawned by the command."""

    home = tmp_path_factory.mktemp("e2e-embedded-home")
    svc = LiveService(home=home, env={})
    svc.env = service_env(
        home, database_url=None, redis_url=None, api_key=svc.api_key, extra=_extra_env(tiny_model_dir)
    )
    try:
        svc.start_api(embedded=True)
        yield svc
    except BaseException:
        print(svc.logs())
        raise
    finally:
        svc.stop()
        for f in (home / "logs").glob("*.log"):
            (home / f"zz-{f.name}").write_text(f.read_text(errors="replace")[-4000:])
