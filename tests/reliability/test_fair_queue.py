"""The per-organization cap, step by step in one process (the live version with real workers is in
test_worker_faults.py): a job over the cap is left queued with no message in flight and told why once,
redelivery does not spin, and the slot's release sends the oldest waiting job."""

from __future__ import annotations

import pytest

from tests.workers.conftest import events, job_row


@pytest.fixture
def cap_one(app_settings, monkeypatch):
    monkeypatch.setattr(app_settings, "max_running_jobs_per_org", 1)


def _queued(new_job) -> str:
    from workers.tasks.validate_job_files_task import validate_job_files

    job_id = new_job()
    assert validate_job_files(job_id) == "queued"
    return job_id


def test_over_the_cap_a_job_waits_queued_and_is_sent_when_a_slot_frees(new_job, cap_one, app_settings):
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.session import session_scope
    from workers.runner import claim, dispatch_waiting, run_training

    first, second, third = _queued(new_job), _queued(new_job), _queued(new_job)
    assert claim(first, "w1", "t-first", app_settings)

    # the second job's message arrives: left queued, no message in flight, one event saying why
    assert run_training(second, worker="w2", task_id=job_row(second).task_id) == "deferred"
    assert run_training(third, worker="w2", task_id=job_row(third).task_id) == "deferred"
    for job_id in (second, third):
        row = job_row(job_id)
        assert row.status == "queued" and row.task_id is None and row.attempt == 0
    # a stray redelivery is skipped cheaply and says nothing new
    assert run_training(second, worker="w3", task_id="stray") == "deferred"
    waits = [m for m in events(second) if m.startswith("Waiting:")]
    assert len(waits) == 1 and "per-organization limit" in waits[0]

    # nothing is sent while the organization stays at its cap
    assert dispatch_waiting(job_row(first).org_pk, app_settings) == []
    # the running job ends: the oldest waiting job (and only it: one slot) gets a message again
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == first).values(status="succeeded"))
    assert dispatch_waiting(job_row(first).org_pk, app_settings) == [second]
    assert job_row(second).task_id is not None and job_row(third).task_id is None
    assert claim(second, "w2", job_row(second).task_id, app_settings)
    assert job_row(second).attempt == 1


def test_other_organizations_are_not_held_back(new_job, cap_one, app_settings, client):
    from tests.app.conftest import jsonl, make_key, upload
    from tests.support import STRING_CHECK_GRADER, arithmetic_rows
    from workers.runner import ClaimResult, claim, try_claim
    from workers.tasks.validate_job_files_task import validate_job_files

    busy = _queued(new_job)
    waiting = _queued(new_job)
    assert claim(busy, "w1", None, app_settings)
    assert try_claim(waiting, "w2", None, app_settings) is ClaimResult.AT_CAPACITY

    other = {"Authorization": f"Bearer {make_key()}"}
    train = upload(client, other, jsonl(arithmetic_rows(2))).json()["id"]
    job = client.post(
        "/v1/fine_tuning/jobs",
        headers=other,
        json={
            "model": "tiny-test",
            "training_file": train,
            "method": {"type": "reinforcement", "reinforcement": {"grader": dict(STRING_CHECK_GRADER)}},
        },
    ).json()["id"]
    assert validate_job_files(job) == "queued"
    assert try_claim(job, "w2", None, app_settings) is ClaimResult.CLAIMED


def test_no_cap_when_the_setting_is_zero(new_job, app_settings, monkeypatch):
    from workers.runner import claim

    monkeypatch.setattr(app_settings, "max_running_jobs_per_org", 0)
    jobs = [_queued(new_job) for _ in range(3)]
    assert all(claim(j, f"w{i}", None, app_settings) for i, j in enumerate(jobs))
