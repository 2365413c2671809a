"""AuthN/AuthZ over every route of the app (enumerated, so a new route is covered or this fails): missing,
malformed, unknown and revoked keys are 401; another organization's ids answer exactly like ids that do
not exist (404, nothing leaks); keys are stored as digests and compared in constant time."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.app.conftest import assert_error, jsonl, make_key, upload
from tests.support import STRING_CHECK_GRADER, arithmetic_rows

_PARAM = re.compile(r"{([^}]+)}")


def _v1_routes(client: Any) -> list[tuple[str, str]]:
    """Every route the app documents (its own OpenAPI document, so nothing is left out by hand)."""
    paths = client.get("/openapi.json").json()["paths"]
    routes = [(m.upper(), p) for p, ops in paths.items() if p.startswith("/v1/") for m in ops]
    assert len(routes) >= 14, routes
    return sorted(routes)


def _fill(path: str, values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: values[m.group(1)], path)


def _call(client: Any, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
    if method in ("POST", "PUT", "PATCH"):
        return client.request(method, path, headers=headers, json=body if body is not None else {})
    return client.request(method, path, headers=headers)


@pytest.fixture(scope="module")
def revoked_key(app_settings) -> str:
    from app import auth
    from core.db.session import session_scope

    key = make_key()
    with session_scope() as s:
        assert auth.revoke_key(s, key)
    return key


def test_every_route_refuses_missing_malformed_unknown_and_revoked_keys(client, revoked_key):
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer  "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer two tokens"},
        {"Authorization": "Bearer sk-openrft-" + "x" * 40},
        {"Authorization": "Bearer " + "A" * 8000},
        {"Authorization": f"Bearer {revoked_key}"},
    ]
    ids = {"file_id": "file-x", "fine_tuning_job_id": "ftjob-x", "model": "ft:x:y:z:w"}
    for method, path in _v1_routes(client):
        url = _fill(path, ids)
        for headers in bad_headers:
            resp = _call(client, method, url, headers)
            err = assert_error(resp, 401)
            assert err["code"] == "invalid_api_key", (method, path, err)
            assert resp.headers.get("www-authenticate") == "Bearer", (method, path)


@pytest.fixture(scope="module")
def victim(client, app_settings) -> dict[str, str]:
    """An organization with one of everything: a file, a job with events, a checkpoint, a model."""
    from sqlalchemy import select

    from core import jobstore
    from core.db.models import Job
    from core.db.session import session_scope

    key = make_key()
    auth = {"Authorization": f"Bearer {key}"}
    train = upload(client, auth, jsonl(arithmetic_rows(4))).json()["id"]
    job = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth,
        json={
            "model": "tiny-test",
            "training_file": train,
            "method": {"type": "reinforcement", "reinforcement": {"grader": dict(STRING_CHECK_GRADER)}},
        },
    ).json()
    with session_scope() as s:
        row = s.scalars(select(Job).where(Job.id == job["id"])).one()
        ckpt = jobstore.register_checkpoint(s, row, 1, "/nonexistent/ckpt", {"step": 1})
        model = jobstore.register_final_model(s, row, "/nonexistent/final")
        ckpt_model = ckpt.fine_tuned_model_checkpoint
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth).json()["data"]
    return {
        "key": key,
        "file_id": train,
        "fine_tuning_job_id": job["id"],
        "model": model,
        "checkpoint_model": ckpt_model,
        "event_id": events[0]["id"],
    }


def _unknown_like(victim: dict[str, str]) -> dict[str, str]:
    tail = uuid.uuid4().hex[:24]
    return {
        "file_id": f"file-{tail}",
        "fine_tuning_job_id": f"ftjob-{tail}",
        "model": victim["model"].rsplit(":", 1)[0] + f":ftjob-{tail}",
        "checkpoint_model": f"{victim['model']}x:ckpt-step-1",
        "event_id": f"ftevent-{tail}",
    }


def _body_for(method: str, path: str, ids: dict[str, str]) -> Any:
    """Routes whose body names objects by id get the (victim's or unknown) ids there."""
    if method != "POST":
        return None
    if path == "/v1/fine_tuning/jobs":
        return {
            "model": "tiny-test",
            "training_file": ids["file_id"],
            "method": {"type": "reinforcement", "reinforcement": {"grader": dict(STRING_CHECK_GRADER)}},
        }
    if path in ("/v1/chat/completions", "/v1/completions"):
        body: dict[str, Any] = {"model": ids["model"], "max_tokens": 1}
        if path.endswith("chat/completions"):
            body["messages"] = [{"role": "user", "content": "hi"}]
        else:
            body["prompt"] = "hi"
        return body
    return None


# Routes that take no id of an object an organization owns (base models and graders are shared).
_NO_OWNED_IDS = {
    ("GET", "/v1/files"),
    ("POST", "/v1/files"),
    ("GET", "/v1/fine_tuning/jobs"),
    ("POST", "/v1/fine_tuning/alpha/graders/run"),
    ("POST", "/v1/fine_tuning/alpha/graders/validate"),
    ("GET", "/v1/models"),
}


def test_every_route_answers_another_orgs_ids_like_unknown_ones(client, victim):
    attacker = {"Authorization": f"Bearer {make_key()}"}
    unknown = _unknown_like(victim)
    checked = []
    for method, path in _v1_routes(client):
        takes_ids = bool(_PARAM.search(path)) or _body_for(method, path, victim) is not None
        if not takes_ids:
            assert (method, path) in _NO_OWNED_IDS, f"new route {method} {path}: add it to this test"
            continue
        answers = []
        for ids in (victim, unknown):
            resp = _call(client, method, _fill(path, ids), attacker, _body_for(method, path, ids))
            err = assert_error(resp, 404)
            answers.append((err["type"], err["param"], err["code"]))
        assert answers[0] == answers[1], (method, path, answers)
        checked.append((method, path))
    assert len(checked) >= 9, checked
    # ... and the checkpoint model by its name
    for method in ("GET", "DELETE"):
        resp = client.request(method, f"/v1/models/{victim['checkpoint_model']}", headers=attacker)
        assert_error(resp, 404)

    # The victim still has everything (nothing was deleted or cancelled by the attacker's calls).
    owner = {"Authorization": f"Bearer {victim['key']}"}
    assert client.get(f"/v1/files/{victim['file_id']}", headers=owner).status_code == 200
    job = client.get(f"/v1/fine_tuning/jobs/{victim['fine_tuning_job_id']}", headers=owner).json()
    assert job["status"] == "validating_files"
    assert client.get(f"/v1/models/{victim['model']}", headers=owner).status_code == 200


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/v1/files", "file_id"),
        ("/v1/fine_tuning/jobs", "fine_tuning_job_id"),
        ("/v1/fine_tuning/jobs/{job}/events", "event_id"),
    ],
)
def test_cursors_from_another_org_answer_like_unknown_ones(client, victim, path, cursor):
    attacker_key = make_key()
    attacker = {"Authorization": f"Bearer {attacker_key}"}
    if "{job}" in path:
        # the attacker's own job, paged with the victim's event id
        train = upload(client, attacker, jsonl(arithmetic_rows(2))).json()["id"]
        own = client.post(
            "/v1/fine_tuning/jobs",
            headers=attacker,
            json={"model": "tiny-test", "training_file": train, "method": {"type": "supervised"}},
        ).json()["id"]
        path = path.replace("{job}", own)
    foreign = assert_error(client.get(path, headers=attacker, params={"after": victim[cursor]}), 400)
    unknown = assert_error(
        client.get(path, headers=attacker, params={"after": _unknown_like(victim)[cursor]}), 400
    )
    assert (foreign["param"], foreign["code"]) == (unknown["param"], unknown["code"]) == ("after", None)


def test_keys_are_stored_as_digests_and_compared_in_constant_time(app_settings, client, monkeypatch):
    import hashlib

    from sqlalchemy import select

    import app.auth as auth_module
    from core.db.models import ApiKey
    from core.db.session import session_scope

    key = make_key()
    with session_scope() as s:
        rows = s.scalars(select(ApiKey)).all()
        stored = {(r.key_hash, r.prefix) for r in rows}
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert (digest, digest[:16]) in stored
    assert not any(key in h or key in p for h, p in stored)

    compared: list[tuple[str, str]] = []
    real = auth_module.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert (digest, digest) in compared  # the whole digest, through hmac.compare_digest
    # A key whose digest shares the stored row's lookup prefix but not the rest is refused by that
    # comparison (forged by planting a row with the right prefix and a different digest).
    compared.clear()
    with session_scope() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.prefix == digest[:16]))
        assert row is not None
        row.key_hash = digest[:16] + "0" * 48
    assert_error(client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}), 401)
    assert compared == [(digest[:16] + "0" * 48, digest)]
