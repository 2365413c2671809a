"""Property-based fuzzing of every operation in openapi.yaml against a live API on PostgreSQL: no 5xx, and
every response (status code, content type, headers, body) matches the contract."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.conftest import Service
from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("schemathesis")]  # one live API

schema = schemathesis.openapi.from_path(REPO / "openapi.yaml")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live_api(make_service, pg_url, tiny_model_dir) -> Service:
    from tests.reliability.conftest import tiny_models_env

    svc = make_service(
        database_url=pg_url,
        redis_url=None,
        extra=tiny_models_env(
            tiny_model_dir,
            # fuzzing is not an attack on the rate limits (tested on their own)
            OPENRFT_RATE_LIMIT_JOBS_PER_MINUTE="0",
            OPENRFT_RATE_LIMIT_CHAT_PER_MINUTE="0",
            OPENRFT_RATE_LIMIT_GRADERS_PER_MINUTE="0",
            OPENRFT_RATE_LIMIT_FILES_PER_MINUTE="0",
            # chat on a base model would start an inference engine per example: not this test's business
            OPENRFT_SERVING_BACKEND="cpu",
        ),
    )
    svc.start_api()
    return svc


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_operation_conforms(case, live_api: Service):
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{live_api.port}",
        headers={"Authorization": f"Bearer {live_api.api_key}"},
        checks=CHECKS,
        timeout=60,
    )
