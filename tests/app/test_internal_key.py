"""The service's own key: model graders call this service out of the box (app.bootstrap, app.grading)."""

from __future__ import annotations

import pytest

from app.cli import local_url


def test_the_internal_key_is_registered_once_and_kept(app_settings):
    from app import auth
    from app.bootstrap import ensure_internal_key
    from core.db.session import session_scope

    with session_scope() as s:
        first = ensure_internal_key(s, app_settings)
    with session_scope() as s:
        again = ensure_internal_key(s, app_settings)
        row = auth.find_key(s, first)
        assert row is not None
        principal = auth.principal_for(row)
    assert again == first == app_settings.internal_api_key()
    assert principal.internal and principal.org_name == auth.INTERNAL_ORG


def test_grader_settings_default_to_this_service_and_never_send_our_key_elsewhere(app_settings):
    from core.settings import grader_settings

    internal = app_settings.internal_api_key()
    assert internal
    own = grader_settings(app_settings)
    assert own["base_url"] == app_settings.public_base_url and own["api_key"] == internal
    elsewhere = grader_settings(
        app_settings.model_copy(update={"grader_base_url": "https://judge.example/v1"})
    )
    assert elsewhere["base_url"] == "https://judge.example/v1" and elsewhere["api_key"] is None
    with_key = app_settings.model_copy(
        update={"grader_base_url": "https://judge.example/v1", "grader_api_key": "sk-judge"}
    )
    assert grader_settings(with_key)["api_key"] == "sk-judge"


def test_the_internal_key_is_not_rate_limited(client, app_settings, monkeypatch):
    from app.ratelimit import get_rate_limiter
    from tests.app.conftest import make_key

    get_rate_limiter.cache_clear()
    monkeypatch.setattr(app_settings, "rate_limit_graders_per_minute", 1)
    grader = {"type": "string_check", "name": "s", "input": "a", "reference": "a", "operation": "eq"}
    body = {"grader": grader, "model_sample": "a"}
    try:
        user = {"Authorization": f"Bearer {make_key()}"}
        internal = {"Authorization": f"Bearer {app_settings.internal_api_key()}"}
        codes = [client.post("/v1/fine_tuning/alpha/graders/run", headers=user, json=body).status_code]
        codes.append(client.post("/v1/fine_tuning/alpha/graders/run", headers=user, json=body).status_code)
        assert codes == [200, 429]
        for _ in range(3):
            assert (
                client.post("/v1/fine_tuning/alpha/graders/run", headers=internal, json=body).status_code
                == 200
            )
    finally:
        get_rate_limiter.cache_clear()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9001"),
        ("0.0.0.0", "http://127.0.0.1:9001"),
        ("::", "http://[::1]:9001"),
        ("::1", "http://[::1]:9001"),
        ("example.internal", "http://example.internal:9001"),
    ],
)
def test_local_url(host, url):
    assert local_url(host, 9001) == url
