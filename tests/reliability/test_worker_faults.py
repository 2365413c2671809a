"""Workers under faults, on PostgreSQL and Redis with real Celery workers: a worker SIGKILLed in the middle of
an RL job (another one resumes it from its last checkpoint, no step twice), workers racing for one job or
for an organization's last slot, more jobs than workers (queued with a position, never failed), and the
per-organization cap that keeps one tenant from starving the others."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.lifecycle import TERMINAL, all_events, sdk, upload_rows, wait_status
from tests.reliability.conftest import Service
from tests.support import REPO, STRING_CHECK_GRADER, arithmetic_rows, supervised_rows, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("reliability-shared-service")]


@pytest.fixture
def service(shared_service: Service) -> Service:
    return shared_service  # cap of 1 running job per organization, two GPU-queue workers


def _sql(service: Service, query: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(service.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(query), params).mappings()]
    finally:
        engine.dispose()


def _rl_job(client: Any, steps: int) -> Any:
    train = upload_rows(client, arithmetic_rows(4), "train.jsonl")
    valid = upload_rows(client, arithmetic_rows(1, seed=1), "valid.jsonl")
    return client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=train,
        validation_file=valid,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": dict(STRING_CHECK_GRADER),
                # a checkpoint (and resumable state) after every step
                "hyperparameters": {"reasoning_effort": "low", "batch_size": 2, "eval_interval": 1},
            },
        },
        extra_body={
            "openrft": {
                "sft": {"enabled": False},
                "rl": {"num_generations": 2, "max_steps": steps, "early_stop": False},
                "eval": {"max_samples": 1, "at_start": False, "holdout": 0},
            }
        },
    )


def _metrics_steps(client: Any, job_id: str) -> list[int]:
    # step events (the RL probe's report is a metrics event too, without a step count)
    return [
        e.data["step"] for e in all_events(client, job_id) if e.type == "metrics" and "total_steps" in e.data
    ]


def test_worker_killed_mid_rl_job_is_resumed_by_another_without_repeating_steps(service: Service):
    client = sdk(service.base_url, service.api_key)
    job = _rl_job(client, steps=3)
    running = wait_status(client, job.id, ("running", *TERMINAL), 120)
    assert running.status == "running"
    # kill the worker holding the job once step 1 has its checkpoint
    wait_until(lambda: 1 in _metrics_steps(client, job.id), 240, interval=0.3, what="step 1")
    holder = _sql(service, "SELECT worker FROM jobs WHERE id = :id", id=job.id)[0]["worker"]
    victim = holder.split("@")[0]
    service.kill(victim)
    service.start_worker("gpu", name=f"{victim}-replacement", beat=False)

    done = wait_status(client, job.id, TERMINAL, 300)
    events = all_events(client, job.id)
    messages = [e.message for e in events]
    assert done.status == "succeeded", (done.error, messages[:20])
    row = _sql(service, "SELECT attempt, worker FROM jobs WHERE id = :id", id=job.id)[0]
    assert row["attempt"] == 2 and row["worker"] != holder, row
    assert any("stopped answering" in m for m in messages), messages
    assert any(m.startswith("Resuming at step") for m in messages), messages
    # every step reported exactly once (the resumed attempt's replace the killed one's)
    steps = _metrics_steps(client, job.id)
    assert sorted(steps) == [1, 2, 3], steps
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    numbers = [c.step_number for c in checkpoints]
    assert len(numbers) == len(set(numbers)) and numbers, numbers
    paths = _sql(
        service, "SELECT c.path FROM checkpoints c JOIN jobs j ON j.pk = c.job_pk WHERE j.id = :id", id=job.id
    )
    assert all((Path(p["path"]) / "adapter_model.safetensors").is_file() for p in paths), paths
    assert done.fine_tuned_model in [m.id for m in client.models.list()]


def _racer(env: dict[str, str], rounds: list[str], barrier: Any, results: Any, name: str) -> None:
    """One racing worker process: imports first, then claims each round's job the moment every racer is
    ready (a barrier), so the claims really are concurrent."""
    import os

    os.environ.update(env)
    from core.settings import get_settings
    from workers.runner import claim

    settings = get_settings()
    for i, job_id in enumerate(rounds):
        barrier.wait(60)
        results.put((i, claim(job_id, name, None, settings)))


def _race(service: Service, rounds: list[list[str]], n: int = 4) -> list[list[bool]]:
    """``n`` processes race in each round; racer ``k`` claims ``round[k % len(round)]``."""
    env = {k: service.env[k] for k in ("DATABASE_URL", "OPENRFT_HOME", "OPENRFT_MAX_RUNNING_JOBS_PER_ORG")}
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=_racer, args=(env, [r[k % len(r)] for r in rounds], barrier, results, f"racer-{k}@test")
        )
        for k in range(n)
    ]
    for proc in procs:
        proc.start()
    outcome: list[list[bool]] = [[] for _ in rounds]
    for _ in range(n * len(rounds)):
        i, won = results.get(timeout=120)
        outcome[i].append(won)
    for proc in procs:
        proc.join(30)
    return outcome


def _queued_jobs_nobody_was_sent(service: Service, n: int) -> list[str]:
    """``n`` queued jobs of a fresh organization, written straight into the database: no message exists for
    them, and their ``task_id`` says one does, so the reaper leaves them alone and only the racers below
    can claim them."""
    import uuid

    from sqlalchemy.orm import Session

    from core import ids
    from core.db.models import Job, Organization

    engine = create_engine(service.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        with Session(engine) as s:
            org = Organization(id=ids.org_id(), name=f"race-{uuid.uuid4().hex[:8]}")
            s.add(org)
            s.flush()
            jobs = [
                Job(
                    id=ids.job_id(),
                    org_pk=org.pk,
                    model="tiny-test",
                    training_file="file-none",
                    seed=1,
                    status="queued",
                    task_id="race-no-message",
                    method={"type": "supervised", "supervised": {"hyperparameters": {}}},
                    resolved_config={},
                    result_files=[],
                )
                for _ in range(n)
            ]
            s.add_all(jobs)
            s.commit()
            return [j.id for j in jobs]
    finally:
        engine.dispose()


def _sql_exec(service: Service, query: str, **params: Any) -> None:
    engine = create_engine(service.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(text(query), params)
    finally:
        engine.dispose()


def test_racing_claims_never_both_win(service: Service):
    """Separate processes claim at once on PostgreSQL: one job, one winner; two jobs of an organization
    whose cap is 1, one winner between them."""
    [one] = _queued_jobs_nobody_was_sent(service, 1)
    a, b = _queued_jobs_nobody_was_sent(service, 2)
    same_job, same_org_slot = _race(service, [[one], [a, b]])
    assert sorted(same_job) == [False, False, False, True]
    assert sorted(same_org_slot) == [False, False, False, True]
    running = _sql(service, "SELECT id FROM jobs WHERE status = 'running' AND id IN (:a, :b)", a=a, b=b)
    assert len(running) == 1
    _sql_exec(service, "UPDATE jobs SET status = 'cancelled' WHERE id IN (:one, :a, :b)", one=one, a=a, b=b)


def _new_org_key(service: Service, org: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "openrft.cli", "keys", "create", "--org", org],
        cwd=REPO, env=service.env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def _sft_job(client: Any, name: str, epochs: int = 1, rows: int = 4) -> Any:
    """An SFT job of ``epochs * rows / 4`` optimizer steps."""
    train = upload_rows(client, supervised_rows(rows), f"{name}.jsonl")
    hyper = {"n_epochs": epochs, "batch_size": 4}
    method = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    return client.fine_tuning.jobs.create(model="tiny-test", training_file=train, suffix=name, method=method)


def test_org_cap_queues_instead_of_failing_and_other_orgs_are_not_starved(service: Service):
    """Cap 1 per organization, 2 GPU workers. Org A submits two jobs, then org B one: A's second job waits
    (queued, with an event saying why) while B's runs next to A's first; A's second starts when A's first
    ends; none fails. A's first job is far longer than the test needs (800 steps) and is cancelled once B's
    has run: with short jobs, A's first could end before B's files were validated, which proves nothing."""
    wait_until(
        lambda: (
            not _sql(service, "SELECT id FROM jobs WHERE status IN ('running', 'queued', 'validating_files')")
        ),
        300,
        what="earlier jobs to finish",
    )
    a = sdk(service.base_url, service.api_key)
    b = sdk(service.base_url, _new_org_key(service, "tenant-b"))
    a1 = _sft_job(a, "a1", epochs=50, rows=64)
    assert wait_status(a, a1.id, ("running", *TERMINAL), 120).status == "running"
    a2 = _sft_job(a, "a2")
    b1 = _sft_job(b, "b1")
    assert wait_status(b, b1.id, TERMINAL, 300).status == "succeeded"
    assert a.fine_tuning.jobs.retrieve(a2.id).status == "queued"  # still behind A's first job
    assert a.fine_tuning.jobs.cancel(a1.id).status == "cancelled"
    done = {j.id: wait_status(a, j.id, TERMINAL, 300) for j in (a1, a2)}
    assert (done[a1.id].status, done[a2.id].status) == ("cancelled", "succeeded"), {
        k: (v.status, v.error) for k, v in done.items()
    }

    rows = {
        r["id"]: r
        for r in _sql(
            service,
            "SELECT id, started_at, finished_at, attempt FROM jobs WHERE id IN (:a1, :a2, :b1)",
            a1=a1.id,
            a2=a2.id,
            b1=b1.id,
        )
    }
    # A's jobs never overlapped; B ran (start to end) next to A's first job
    assert rows[a2.id]["started_at"] >= rows[a1.id]["finished_at"], rows
    assert rows[b1.id]["finished_at"] < rows[a1.id]["finished_at"], rows
    assert all(r["attempt"] == 1 for r in rows.values()), rows  # waiting is not an attempt

    waited = [all_events(a, j.id) for j in (a1, a2)]
    waits = [
        e for events in waited for e in events if (e.data or {}).get("waiting_for") == "organization_capacity"
    ]
    assert len(waits) == 1, [e.message for events in waited for e in events]
    assert "per-organization limit" in waits[0].message
    # every job was told its place in the queue when its files were validated
    for client, job in ((a, a1), (a, a2), (b, b1)):
        positions = [
            e.data["queue_position"] for e in all_events(client, job.id) if "queue_position" in (e.data or {})
        ]
        assert len(positions) == 1 and positions[0] >= 1, positions
    assert Counter(r["attempt"] for r in rows.values()) == Counter({1: 3})
