from __future__ import annotations

from typing import Any

import pytest

from tests.app.conftest import assert_error, jsonl, make_key, upload
from tests.support import STRING_CHECK_GRADER, arithmetic_rows, supervised_rows


def _files(client, auth) -> tuple[str, str]:
    train = upload(client, auth, jsonl(arithmetic_rows(4))).json()["id"]
    valid = upload(client, auth, jsonl(arithmetic_rows(2, seed=1)), name="valid.jsonl").json()["id"]
    return train, valid


def _rft_body(train: str, valid: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny-test",
        "training_file": train,
        "validation_file": valid,
        "method": {"type": "reinforcement", "reinforcement": {"grader": dict(STRING_CHECK_GRADER)}},
        **extra,
    }


def _set_status(job_id: str, status: str, **values: Any) -> None:
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=status, **values))


def test_create_reinforcement_job(client, auth):
    train, valid = _files(client, auth)
    resp = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth,
        json=_rft_body(train, valid, suffix="math", seed=7, metadata={"team": "a"}),
    )
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert job["id"].startswith("ftjob-")
    assert job["object"] == "fine_tuning.job"
    assert job["status"] == "validating_files"
    assert job["model"] == "tiny-test"
    assert job["seed"] == 7
    assert job["suffix"] == "math"
    assert job["metadata"] == {"team": "a"}
    assert job["method"]["type"] == "reinforcement"
    assert job["method"]["reinforcement"]["grader"]["type"] == "string_check"
    assert isinstance(job["method"]["reinforcement"]["hyperparameters"], dict)
    assert job["fine_tuned_model"] is None and job["finished_at"] is None
    assert job["organization_id"].startswith("org-")
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth).json()
    assert events["data"][-1]["message"].startswith("Created fine-tuning job")
    assert all(
        e["object"] == "fine_tuning.job.event" and e["id"].startswith("ftevent-") for e in events["data"]
    )


def test_create_supervised_job_default_method(client, auth):
    train = upload(client, auth, jsonl(supervised_rows(3))).json()["id"]
    job = client.post(
        "/v1/fine_tuning/jobs", headers=auth, json={"model": "tiny-test", "training_file": train}
    ).json()
    assert job["method"]["type"] == "supervised"
    legacy = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth,
        json={"model": "tiny-test", "training_file": train, "hyperparameters": {"n_epochs": 2}},
    ).json()
    assert legacy["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert legacy["hyperparameters"]["n_epochs"] == 2


def test_seed_is_assigned_when_missing(client, auth):
    train, _ = _files(client, auth)
    job = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train)).json()
    assert 0 <= job["seed"] <= 2147483647


def test_unknown_model_is_400_naming_model(client, auth):
    train, _ = _files(client, auth)
    err = assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json={**_rft_body(train), "model": "gpt-9"}),
        400,
        param="model",
    )
    assert "smollm2-135m-instruct" in err["message"]


def test_file_checks(client, auth):
    train, _ = _files(client, auth)
    assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body("file-missing")),
        404,
        param="training_file",
    )
    other_file = upload(client, {"Authorization": f"Bearer {make_key()}"}, "{}\n").json()["id"]
    assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(other_file)),
        404,
        param="training_file",
    )
    assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, other_file)),
        404,
        param="validation_file",
    )
    batch = upload(client, auth, "{}\n", purpose="batch").json()["id"]
    assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(batch)), 400, param="training_file"
    )


@pytest.mark.parametrize(
    ("grader", "param_prefix"),
    [
        (
            {"type": "string_check", "name": "x", "input": "a", "reference": "b", "operation": "contains"},
            "method.reinforcement.grader",
        ),
        ({"type": "no_such_grader", "name": "x"}, "method.reinforcement.grader"),
        (
            {
                "type": "text_similarity",
                "name": "x",
                "input": "a",
                "reference": "b",
                "evaluation_metric": "nope",
            },
            "method.reinforcement.grader",
        ),
    ],
)
def test_invalid_grader_is_400_naming_the_field(client, auth, grader, param_prefix):
    train, _ = _files(client, auth)
    body = _rft_body(train)
    body["method"]["reinforcement"]["grader"] = grader
    err = assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=body), 400)
    assert err["param"].startswith(param_prefix), err


def test_missing_grader(client, auth):
    train, _ = _files(client, auth)
    body = {
        "model": "tiny-test",
        "training_file": train,
        "method": {"type": "reinforcement", "reinforcement": {}},
    }
    assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=body), 400)


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"n_epochs": 0}, "n_epochs"),
        ({"batch_size": 1000}, "batch_size"),
        ({"learning_rate_multiplier": -1}, "learning_rate_multiplier"),
        ({"n_epochs": "lots"}, "n_epochs"),
    ],
)
def test_hyperparameters_out_of_range(client, auth, hyperparameters, field):
    train, _ = _files(client, auth)
    body = _rft_body(train)
    body["method"]["reinforcement"]["hyperparameters"] = hyperparameters
    err = assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=body), 400)
    assert field in (err["param"] or ""), err


def test_bad_openrft_extension_names_field(client, auth):
    train, _ = _files(client, auth)
    err = assert_error(
        client.post(
            "/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, openrft={"no_such_option": 1})
        ),
        400,
    )
    assert (err["param"] or "").startswith("openrft"), err


def test_metadata_and_suffix_limits(client, auth):
    train, _ = _files(client, auth)
    assert_error(
        client.post(
            "/v1/fine_tuning/jobs",
            headers=auth,
            json=_rft_body(train, metadata={str(i): "v" for i in range(17)}),
        ),
        400,
        param="metadata",
    )
    assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, suffix="x" * 65)),
        400,
        param="suffix",
    )
    assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, seed=-1)), 400, param="seed"
    )


def test_list_pagination_and_metadata_filter(client, auth):
    train, _ = _files(client, auth)
    ids = [
        client.post(
            "/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, metadata={"run": str(i % 2)})
        ).json()["id"]
        for i in range(5)
    ]
    first = client.get("/v1/fine_tuning/jobs", headers=auth, params={"limit": 2}).json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    second = client.get(
        "/v1/fine_tuning/jobs", headers=auth, params={"limit": 2, "after": first["data"][-1]["id"]}
    ).json()
    assert [j["id"] for j in second["data"]] == ids[::-1][2:4]
    filtered = client.get("/v1/fine_tuning/jobs", headers=auth, params={"metadata[run]": "1"}).json()
    assert [j["id"] for j in filtered["data"]] == [ids[3], ids[1]]
    none = client.get("/v1/fine_tuning/jobs", headers=auth, params={"metadata[run]": "9"}).json()
    assert none["data"] == [] and none["has_more"] is False


def test_jobs_are_invisible_to_other_orgs(client, auth):
    train, _ = _files(client, auth)
    job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train)).json()["id"]
    other = {"Authorization": f"Bearer {make_key()}"}
    for method, path in [
        ("get", f"/v1/fine_tuning/jobs/{job_id}"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/events"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/checkpoints"),
        ("post", f"/v1/fine_tuning/jobs/{job_id}/cancel"),
        ("post", f"/v1/fine_tuning/jobs/{job_id}/pause"),
        ("post", f"/v1/fine_tuning/jobs/{job_id}/resume"),
    ]:
        assert_error(getattr(client, method)(path, headers=other), 404)
    assert client.get("/v1/fine_tuning/jobs", headers=other).json()["data"] == []


def test_state_changes(client, auth, app_settings, monkeypatch):
    monkeypatch.setattr(app_settings, "pause_wait_seconds", 0.3)  # no worker here to confirm a pause
    train, _ = _files(client, auth)
    job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train)).json()["id"]
    base = f"/v1/fine_tuning/jobs/{job_id}"
    # validating_files: can't pause or resume, can cancel
    assert_error(client.post(f"{base}/pause", headers=auth), 400, code="invalid_job_state")
    assert_error(client.post(f"{base}/resume", headers=auth), 400, code="invalid_job_state")
    # queued -> paused -> queued (resume returns queued, like OpenAI)
    _set_status(job_id, "queued")
    assert client.post(f"{base}/pause", headers=auth).json()["status"] == "paused"
    assert client.post(f"{base}/resume", headers=auth).json()["status"] == "queued"
    # running, no worker confirms within OPENRFT_PAUSE_WAIT_SECONDS: still running, the pause requested
    _set_status(job_id, "running")
    assert client.post(f"{base}/pause", headers=auth).json()["status"] == "running"
    from sqlalchemy import select

    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope() as s:
        assert s.scalar(select(Job.pause_requested).where(Job.id == job_id)) is True
    cancelled = client.post(f"{base}/cancel", headers=auth).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    # terminal: every change is a 400
    for action in ("cancel", "pause", "resume"):
        assert_error(client.post(f"{base}/{action}", headers=auth), 400, code="invalid_job_state")
    messages = [
        e["message"] for e in client.get(f"{base}/events", headers=auth, params={"limit": 100}).json()["data"]
    ]
    assert messages[0] == "Job cancelled by the user."


def test_pause_of_a_running_job_returns_it_paused(client, auth, app_settings, monkeypatch):
    """The call waits for the worker to stop at its next step boundary and save the snapshot."""
    import threading
    import time

    from sqlalchemy import select

    from core import jobstore
    from core.db.models import Job
    from core.db.session import session_scope

    monkeypatch.setattr(app_settings, "pause_wait_seconds", 30)
    train, _ = _files(client, auth)
    job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train)).json()["id"]
    _set_status(job_id, "running")

    def worker() -> None:  # what the training worker does once it sees the request
        for _ in range(100):
            with session_scope() as s:
                if s.scalar(select(Job.pause_requested).where(Job.id == job_id)):
                    break
            time.sleep(0.05)
        time.sleep(0.5)
        with session_scope() as s:
            jobstore.transition(s, job_id, "paused", from_=("running",), pause_requested=False)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        started = time.monotonic()
        paused = client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers=auth).json()
        assert paused["status"] == "paused" and time.monotonic() - started < 20
    finally:
        thread.join(10)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()["status"] == "paused"


def test_events_newest_first_and_paginated(client, auth):
    from sqlalchemy import select

    from core import jobstore
    from core.db.models import Job
    from core.db.session import session_scope

    train, _ = _files(client, auth)
    job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train)).json()["id"]
    with session_scope() as s:
        pk = s.scalar(select(Job.pk).where(Job.id == job_id))
        for i in range(30):
            jobstore.add_event(s, pk, f"step {i}", type="metrics", data={"step": i})
    base = f"/v1/fine_tuning/jobs/{job_id}/events"
    page = client.get(base, headers=auth).json()
    assert len(page["data"]) == 20 and page["has_more"] is True
    assert page["data"][0]["message"] == "step 29" and page["data"][0]["type"] == "metrics"
    assert page["data"][0]["data"] == {"step": 29}
    seen = [e["id"] for e in page["data"]]
    after = page["data"][-1]["id"]
    while True:
        nxt = client.get(base, headers=auth, params={"after": after, "limit": 7}).json()
        seen += [e["id"] for e in nxt["data"]]
        if not nxt["has_more"]:
            break
        after = nxt["data"][-1]["id"]
    assert len(seen) == len(set(seen)) == 32


def test_checkpoints_listed_and_registered_as_models(client, auth):
    from sqlalchemy import select

    from core import jobstore
    from core.db.models import Job
    from core.db.session import session_scope

    train, _ = _files(client, auth)
    job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, suffix="s")).json()["id"]
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        for step in (2, 4, 6):
            jobstore.register_checkpoint(
                s, job, step, f"/ckpt/{step}", {"step": step, "full_valid_mean_reward": step / 10}
            )
        jobstore.register_checkpoint(s, job, 4, "/ckpt/4b", {"step": 4, "full_valid_mean_reward": 0.5})
        jobstore.remove_checkpoint(s, job, 2)
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=auth).json()
    assert [c["step_number"] for c in page["data"]] == [6, 4]
    ckpt = page["data"][1]
    assert ckpt["id"].startswith("ftckpt_") and ckpt["fine_tuning_job_id"] == job_id
    assert ckpt["fine_tuned_model_checkpoint"].endswith(f":s:{job_id}:ckpt-step-4")
    assert ckpt["metrics"]["full_valid_mean_reward"] == 0.5
    # A checkpoint is a model (retrieve, chat) but, as at OpenAI, models.list does not list it.
    models = [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]]
    assert not any(":ckpt-step-" in m for m in models)
    name = ckpt["fine_tuned_model_checkpoint"]
    assert client.get(f"/v1/models/{name}", headers=auth).status_code == 200
    assert client.get(f"/v1/models/{name[: -len('4')]}2", headers=auth).status_code == 404  # removed
    # Deleting the job's fine-tuned model deletes its checkpoints' models with it.
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        final = jobstore.register_final_model(s, job, "/final")
    models = [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]]
    assert final in models
    assert client.delete(f"/v1/models/{final}", headers=auth).json()["deleted"] is True
    for gone in (final, name, page["data"][0]["fine_tuned_model_checkpoint"]):
        assert client.get(f"/v1/models/{gone}", headers=auth).status_code == 404


def test_grader_item_fields_are_checked_against_the_rows(client, auth):
    """A misspelt {{ item.* }} field is a 400 naming it, not a job that trains on zero reward."""
    train, valid = _files(client, auth)
    typo = {**STRING_CHECK_GRADER, "reference": "{{ item.answr }}"}
    body = _rft_body(train)
    body["method"]["reinforcement"]["grader"] = typo
    err = assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=body),
        400,
        param="method.reinforcement.grader",
        code="invalid_grader",
    )
    assert "{{ item.answr }}" in err["message"] and f"line 1 of {train}" in err["message"]
    assert "answer" in err["message"]  # the row's fields are listed: the right name is right there
    # nested graders and model-grader messages are templates too; the validation file is checked as well
    nested = {
        "type": "multi",
        "graders": {
            "ok": dict(STRING_CHECK_GRADER),
            "judge": {
                "type": "score_model",
                "model": "tiny-test",
                "input": [
                    {
                        "role": "user",
                        "content": "Question {{ item.question }} answer {{ sample.output_text }}",
                    }
                ],
            },
        },
        "calculate_output": "ok + judge",
    }
    body = _rft_body(train, valid)
    body["method"]["reinforcement"]["grader"] = nested
    err = assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=body), 400)
    assert "{{ item.question }}" in err["message"]
    only_valid = upload(
        client, auth, jsonl([{"messages": [{"role": "user", "content": "q"}]}]), name="v.jsonl"
    )
    body = _rft_body(train, only_valid.json()["id"])
    err = assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=body), 400)
    assert only_valid.json()["id"] in err["message"]
    # the openrft.reference template is checked too; rows that have the field pass
    body = _rft_body(train, openrft={"reference": "{{ item.solution }}"})
    assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=body), 400, param="openrft.reference")
    assert client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, valid)).status_code == 200


def test_unknown_judge_models_are_refused_with_the_models_and_the_setting(client, auth, app_settings):
    """A score_model naming a model nothing here serves (OpenAI's gpt-4.1) is refused at job creation, at the
    field, with the models this service judges with and how to add one; mapping it makes it acceptable."""
    train, valid = _files(client, auth)
    judge = {
        "type": "score_model",
        "model": "gpt-4.1",
        "input": [{"role": "user", "content": "Rate {{ sample.output_text }}"}],
    }
    body = _rft_body(train, valid)
    body["method"]["reinforcement"]["grader"] = {
        "type": "multi",
        "graders": {"exact": dict(STRING_CHECK_GRADER), "judge": judge},
        "calculate_output": "exact + judge",
    }
    err = assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=body),
        400,
        param="method.reinforcement.grader.graders.judge.model",
        code="invalid_grader",
    )
    assert "tiny-test" in err["message"] and "smollm2-135m-instruct" in err["message"]
    assert "OPENRFT_GRADER_MODELS" in err["message"] and "OPENRFT_GRADER_BASE_URL" in err["message"]
    validate = client.post("/v1/fine_tuning/alpha/graders/validate", headers=auth, json={"grader": judge})
    assert_error(validate, 400, param="grader.model", code="invalid_grader")
    # a base model of this service judges; a model mapped to an endpoint does too
    ok = client.post(
        "/v1/fine_tuning/alpha/graders/validate",
        headers=auth,
        json={"grader": {**judge, "model": "tiny-test"}},
    )
    assert ok.status_code == 200, ok.text
    mapped = app_settings.model_copy(update={"grader_models": {"gpt-4.1": {"base_url": "http://judge/v1"}}})
    from core.settings import get_settings

    client.app.dependency_overrides[get_settings] = lambda: mapped
    try:
        assert client.post("/v1/fine_tuning/jobs", headers=auth, json=body).status_code == 200
    finally:
        client.app.dependency_overrides.pop(get_settings)


def test_integrations_and_response_format_are_honoured_or_refused(client, auth):
    """Nothing accepted is ignored: a wandb integration is carried out (see tests/workers), any other
    integration, a malformed one, or an RFT response_format (rollouts are not constrained here) is a 400."""
    train, valid = _files(client, auth)
    for integrations, param in (
        ([{"type": "slack", "slack": {}}], "integrations[0].type"),
        ([{"type": "wandb", "wandb": {}}], "integrations[0].wandb.project"),
        ([{"type": "wandb", "wandb": {"project": "p", "color": "red"}}], "integrations[0].wandb.color"),
        ([{"type": "wandb", "wandb": {"project": "p", "tags": "a"}}], "integrations[0].wandb.tags"),
    ):
        body = _rft_body(train, valid, integrations=integrations)
        assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=body), 400, param=param)
    wandb = [{"type": "wandb", "wandb": {"project": "rft", "name": "first", "tags": ["a"]}}]
    ok = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, valid, integrations=wandb))
    assert ok.status_code == 200 and ok.json()["integrations"] == wandb
    body = _rft_body(train, valid)
    body["method"]["reinforcement"]["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "a", "schema": {"type": "object"}},
    }
    err = assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=body),
        400,
        param="method.reinforcement.response_format",
        code="unsupported_parameter",
    )
    assert "sample.output_json" in err["message"]


@pytest.mark.parametrize(
    ("openrft", "param"),
    [
        (
            {"sft": {"teacher": {"base_url": "http://127.0.0.1:8000/v1", "model": "m"}}},
            "openrft.sft.teacher.base_url",
        ),
        (
            {"prm": {"type": "endpoint", "base_url": "http://localhost:6379/v1", "model": "m"}},
            "openrft.prm.base_url",
        ),
        (
            {
                "augmentation": {
                    "enabled": True,
                    "teacher": {"base_url": "http://169.254.169.254/v1", "model": "m"},
                }
            },
            "openrft.augmentation.teacher.base_url",
        ),
        ({"rl": {"vllm_server_base_url": "http://10.1.2.3:8000"}}, "openrft.rl.vllm_server_base_url"),
    ],
)
def test_user_urls_on_the_services_network_are_refused(
    client, auth, app_settings, monkeypatch, openrft, param
):
    train, _ = _files(client, auth)
    resp = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, openrft=openrft))
    assert "OPENRFT_PRIVATE_URL_HOSTS" in assert_error(resp, 400, param=param)["message"]
    # The operator's list lets a private model server through.
    monkeypatch.setattr(app_settings, "private_url_hosts", [_url_host(openrft)])
    ok = client.post("/v1/fine_tuning/jobs", headers=auth, json=_rft_body(train, openrft=openrft))
    assert ok.status_code == 200, ok.text


def _url_host(openrft: dict) -> str:
    from urllib.parse import urlsplit

    from trainer.config import user_urls

    ((_, url),) = user_urls(openrft)
    return urlsplit(url).hostname or ""
