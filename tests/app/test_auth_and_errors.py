from __future__ import annotations

from tests.app.conftest import assert_error, make_key


def test_missing_malformed_unknown_keys(client):
    assert_error(client.get("/v1/files"), 401, code="invalid_api_key")
    assert_error(client.get("/v1/files", headers={"Authorization": "Basic abc"}), 401)
    assert_error(client.get("/v1/files", headers={"Authorization": "Bearer"}), 401)
    assert_error(client.get("/v1/files", headers={"Authorization": "Bearer sk-openrft-nope"}), 401)


def test_revoked_key_is_refused(client, app_settings):
    from app import auth
    from core.db.session import session_scope

    key = make_key()
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with session_scope() as s:
        assert auth.revoke_key(s, key) is True
    assert_error(client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}), 401)
    with session_scope() as s:
        assert auth.revoke_key(s, key) is False


def test_keys_are_stored_hashed(app_settings):
    from sqlalchemy import select

    from core.db.models import ApiKey
    from core.db.session import session_scope

    key = make_key()
    with session_scope() as s:
        stored = [(r.key_hash, r.prefix) for r in s.scalars(select(ApiKey)).all()]
    assert all(key not in h and key not in p for h, p in stored)


def test_unknown_route_and_method_are_openai_errors(client, auth):
    assert_error(client.get("/v1/nope", headers=auth), 404)
    assert_error(client.put("/v1/files", headers=auth), 405)


def test_validation_error_is_400_naming_the_field(client, auth):
    resp = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": "file-x"})
    assert_error(resp, 400, param="model")
    resp = client.post(
        "/v1/fine_tuning/jobs", headers=auth, json={"model": "m", "training_file": "f", "bogus": 1}
    )
    assert_error(resp, 400, param="bogus")
    resp = client.get("/v1/fine_tuning/jobs", headers=auth, params={"limit": 0})
    assert_error(resp, 400, param="limit")


def test_a_body_that_is_not_json_is_named_as_the_body(client, auth):
    resp = client.post(
        "/v1/fine_tuning/jobs",
        headers={**auth, "content-type": "application/json"},
        content=b'{"model": "x", "seed": 20,',
    )
    err = assert_error(resp, 400, code="invalid_json")
    assert err["param"] is None  # not the character offset dressed up as a field
    assert err["message"].startswith("We could not parse the JSON body of your request")
    assert "at character 26" in err["message"]


def test_request_id_is_echoed_or_generated(client, auth):
    resp = client.get("/v1/files", headers={**auth, "x-request-id": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    assert client.get("/v1/files", headers=auth).headers["x-request-id"].startswith("req_")


def test_unhandled_exception_is_an_openai_500_with_request_id(app_settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as c:
        resp = c.get("/boom")
    err = assert_error(resp, 500)
    assert err["type"] == "server_error"
    assert "kaboom" not in err["message"]  # internals don't leak


def test_domain_errors_map_to_openai_errors_in_one_place():
    from app.errors import APIError, domain_error
    from serving.errors import ModelLoadingError
    from trainer.config import ConfigError
    from trainer.graders import GraderValidationError

    loading = domain_error(ModelLoadingError("m", "engine starting", retry_after=3))
    assert (loading.status_code, loading.type, loading.code) == (
        503,
        "service_unavailable_error",
        "model_loading",
    )
    assert loading.headers == {"Retry-After": "3"}
    grader = domain_error(GraderValidationError("grader.operation", "bad"), grader_at="method.reinforcement.")
    assert (grader.status_code, grader.param, grader.code) == (
        400,
        "method.reinforcement.grader.operation",
        "invalid_grader",
    )
    config = domain_error(ConfigError("too big", param="hyperparameters.n_epochs"))
    assert (config.param, config.code) == ("hyperparameters.n_epochs", "invalid_hyperparameters")
    same = APIError(409, "x")
    assert domain_error(same) is same and same.type == "conflict_error"


def test_a_serving_error_from_a_route_is_the_handler_s(client, auth):
    """The chat route does not catch ServingError: the API's handler answers it in OpenAI's shape."""
    resp = client.post(
        "/v1/chat/completions",
        headers=auth,
        json={"model": "ft:nope", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert_error(resp, 404, param="model", code="model_not_found")
    resp = client.post(
        "/v1/fine_tuning/alpha/graders/validate", headers=auth, json={"grader": {"type": "nope"}}
    )
    assert_error(resp, 400, code="invalid_grader")
