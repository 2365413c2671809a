from __future__ import annotations

from typing import Any

import pytest

from tests.app.conftest import jsonl, upload
from tests.support import STRING_CHECK_GRADER, arithmetic_rows


@pytest.fixture
def new_job(client, key):
    """Factory: upload files and create a job through the API; returns the job id."""
    auth = {"Authorization": f"Bearer {key}"}

    def make(
        train_content: str | bytes | None = None,
        *,
        method: str = "reinforcement",
        valid: bool = True,
        **extra: Any,
    ) -> str:
        train = upload(client, auth, train_content or jsonl(arithmetic_rows(4))).json()["id"]
        body: dict[str, Any] = {"model": "tiny-test", "training_file": train, **extra}
        if valid:
            body["validation_file"] = upload(client, auth, jsonl(arithmetic_rows(2, seed=1))).json()["id"]
        if method == "reinforcement":
            body["method"] = {"type": "reinforcement", "reinforcement": {"grader": dict(STRING_CHECK_GRADER)}}
        resp = client.post("/v1/fine_tuning/jobs", headers=auth, json=body)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["id"])

    return make


def queued_rl_job(client: Any, key: str, openrft: dict[str, Any]) -> str:
    """A reinforcement job with ``openrft`` options, validated and queued: 12 rows (SFT steps 1-3 at batch 4),
    3 validation rows, checkpoints every 2 steps; returns its id."""
    from workers.tasks.validate_job_files_task import validate_job_files

    auth = {"Authorization": f"Bearer {key}"}
    train = upload(client, auth, jsonl(arithmetic_rows(12))).json()["id"]
    valid = upload(client, auth, jsonl(arithmetic_rows(3, seed=1))).json()["id"]
    body = {
        "model": "tiny-test",
        "training_file": train,
        "validation_file": valid,
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": dict(STRING_CHECK_GRADER),
                "hyperparameters": {"eval_interval": 2, "reasoning_effort": "low"},
            },
        },
        "openrft": openrft,
    }
    resp = client.post("/v1/fine_tuning/jobs", headers=auth, json=body)
    assert resp.status_code == 200, resp.text
    job_id = str(resp.json()["id"])
    assert validate_job_files(job_id) == "queued"
    return job_id


def job_row(job_id: str) -> Any:
    from sqlalchemy import select

    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        s.expunge(job)
        return job


def events(job_id: str) -> list[str]:
    from sqlalchemy import select

    from core.db.models import Job, JobEvent
    from core.db.session import session_scope

    with session_scope() as s:
        pk = s.scalar(select(Job.pk).where(Job.id == job_id))
        return [
            e.message for e in s.scalars(select(JobEvent).where(JobEvent.job_pk == pk).order_by(JobEvent.pk))
        ]
