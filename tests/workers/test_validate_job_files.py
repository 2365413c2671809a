from __future__ import annotations

import json

from tests.workers.conftest import events, job_row


def test_valid_files_move_the_job_to_queued(new_job):
    from workers.tasks.validate_job_files_task import validate_job_files

    job_id = new_job()
    assert validate_job_files(job_id) == "queued"
    job = job_row(job_id)
    assert job.status == "queued" and job.task_id
    assert any(m.startswith("Files validated") for m in events(job_id))
    assert validate_job_files(job_id) == "skipped"  # idempotent on redelivery


def test_a_job_cancelled_during_validation_gets_no_validated_events(new_job, monkeypatch):
    """The cancel lands while the files are read: the move to queued finds the job no longer validating, and
    the "file validated" events go with it (they used to be written after "Job cancelled by the user.")."""
    from core import jobstore
    from workers.tasks.validate_job_files_task import validate_job_files

    job_id = new_job()
    real = jobstore.transition

    def cancelled_meanwhile(session, job_id_, to, **kw):  # type: ignore[no-untyped-def]
        if to == "queued":
            assert real(session, job_id_, "cancelled", from_=("validating_files",))
        return real(session, job_id_, to, **kw)

    monkeypatch.setattr(jobstore, "transition", cancelled_meanwhile)
    assert validate_job_files(job_id) == "skipped"
    assert not any("validated" in m for m in events(job_id))
    assert job_row(job_id).status == "validating_files"  # the cancel itself was the API's, rolled back here


def test_every_bad_line_is_reported_with_its_number(new_job):
    from workers.tasks.validate_job_files_task import validate_job_files

    lines = [
        json.dumps({"messages": [{"role": "user", "content": "ok"}], "answer": "1"}),
        "{not json",
        json.dumps({"no_messages": True}),
        json.dumps([1, 2]),
        json.dumps({"messages": [{"role": "assistant", "content": "a"}]}),
        "",
        json.dumps({"messages": []}),
    ]
    job_id = new_job("\n".join(lines) + "\n")
    assert validate_job_files(job_id) == "failed"
    job = job_row(job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error["code"] == "invalid_training_file"
    assert job.error["param"] == "training_file"
    message = job.error["message"]
    for line, reason in [
        (2, "invalid JSON"),
        (3, "missing 'messages'"),
        (4, "JSON object"),
        (5, "last message must be from 'user'"),
        (7, "non-empty"),
    ]:
        assert f"line {line}: " in message and reason in message, (line, message)
    assert "line 1:" not in message and "line 6:" not in message


def test_a_reply_after_the_question_is_accepted_as_the_reference(new_job):
    from workers.tasks.validate_job_files_task import validate_job_files

    row = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "answer": "a",
    }
    job_id = new_job(json.dumps(row) + "\n")
    assert validate_job_files(job_id) == "queued", job_row(job_id).error


def test_supervised_needs_an_assistant_message(new_job):
    from workers.tasks.validate_job_files_task import validate_job_files

    row = json.dumps({"messages": [{"role": "user", "content": "q"}]})
    job_id = new_job(row + "\n", method="supervised", valid=False)
    assert validate_job_files(job_id) == "failed"
    error = job_row(job_id).error
    assert error["code"] == "invalid_training_file" and "assistant" in error["message"]


def test_non_utf8_file_fails_validation(new_job):
    from workers.tasks.validate_job_files_task import validate_job_files

    good = json.dumps({"messages": [{"role": "user", "content": "q"}], "answer": "1"}).encode()
    job_id = new_job(good + b"\n" + b"\xff\xfe bad bytes\n")
    assert validate_job_files(job_id) == "failed"
    assert "line 2: not valid UTF-8" in job_row(job_id).error["message"]


def test_deleted_upload_does_not_break_a_validated_job(new_job, client, key):
    from workers.tasks.validate_job_files_task import validate_job_files

    job_id = new_job()
    validate_job_files(job_id)
    train = job_row(job_id).training_file
    client.delete(f"/v1/files/{train}", headers={"Authorization": f"Bearer {key}"})
    from core.settings import get_settings
    from workers.runner import data_path

    assert data_path(get_settings(), job_id, "training").read_text().count("\n") == 4


def test_the_queue_position_counts_only_the_organizations_own_jobs(new_job, client):
    """Another tenant's queued work is not shown (nor counted) in a job's events."""
    from sqlalchemy import select

    from core.db.models import Job, JobEvent
    from core.db.session import session_scope
    from tests.app.conftest import jsonl, make_key, upload
    from tests.support import STRING_CHECK_GRADER, arithmetic_rows
    from workers.tasks.validate_job_files_task import validate_job_files

    def position(job_id: str) -> int:
        with session_scope() as s:
            pk = s.scalar(select(Job.pk).where(Job.id == job_id))
            data = [e.data for e in s.scalars(select(JobEvent).where(JobEvent.job_pk == pk)) if e.data]
        return next(d["queue_position"] for d in data if "queue_position" in d)

    other = {"Authorization": f"Bearer {make_key()}"}
    train = upload(client, other, jsonl(arithmetic_rows(4))).json()["id"]
    grader = {"type": "reinforcement", "reinforcement": {"grader": dict(STRING_CHECK_GRADER)}}
    for _ in range(2):  # another organization's jobs, queued first
        resp = client.post(
            "/v1/fine_tuning/jobs",
            headers=other,
            json={"model": "tiny-test", "training_file": train, "method": grader},
        )
        assert validate_job_files(resp.json()["id"]) == "queued"
    first, second = new_job(), new_job()
    assert validate_job_files(first) == validate_job_files(second) == "queued"
    assert (position(first), position(second)) == (1, 2)
    assert "among your organization's queued jobs" in events(second)[-1]
