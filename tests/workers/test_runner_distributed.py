"""The worker running a job on several processes (trainer.launch.launch_job, gloo on the CPU): rank 0's events reach
the database as a one-process job's do, and a rank that dies re-queues the job, which resumes from its last
checkpoint. The real trainer on the tiny model, in real ranks; the worker's glue in this process."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

import trainer
import trainer.launch
from tests.support import wait_until
from tests.workers.conftest import events, job_row, queued_rl_job
from trainer.event_file import CONSUMER_ENV
from trainer.launch import RanksFailed

OPENRFT = {
    "distributed": {"processes": 2},
    "rl": {"max_steps": 2, "early_stop": False},
    "sft": {"n_epochs": 1},
    "eval": {"holdout": 0},
}


@pytest.fixture
def two_process_job(client, key):  # type: ignore[no-untyped-def]
    """A reinforcement job on 2 processes: 12 rows, SFT steps 1-3, RL steps 4-5, checkpoints at 3 and 5."""
    return lambda: queued_rl_job(client, key, OPENRFT)


def job_events(job_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    from sqlalchemy import select

    from core.db.models import Job, JobEvent
    from core.db.session import session_scope

    with session_scope() as s:
        pk = s.scalar(select(Job.pk).where(Job.id == job_id))
        rows = s.scalars(select(JobEvent).where(JobEvent.job_pk == pk).order_by(JobEvent.pk))
        return [(e.type, e.message, dict(e.data or {})) for e in rows]


def training_steps(job_id: str) -> list[int]:
    return [d["step"] for t, _, d in job_events(job_id) if t == "metrics" and d.get("stage") in ("sft", "rl")]


def ranks_of_this_process() -> dict[int, int]:
    """rank -> pid of the live ranks launched from this process (they carry its pid as the event consumer)."""
    mine = f"{CONSUMER_ENV}={os.getpid()}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        rank = [v for v in env if v.startswith(b"RANK=")]
        if mine in env and rank and state != "Z":
            found[int(rank[0].split(b"=")[1])] = int(proc.name)
    return found


def test_a_two_process_job_records_its_events_like_one_process(two_process_job):
    from workers.runner import run_training

    job_id = two_process_job()
    assert run_training(job_id, worker="w1", task_id=None) == "succeeded"
    job = job_row(job_id)
    assert job.status == "succeeded" and job.fine_tuned_model and job.trained_tokens > 0
    assert len(job.result_files) == 2  # the metrics CSV and the rollouts, from rank 0's JobResult
    assert training_steps(job_id) == [1, 2, 3, 4, 5]  # one voice: each step once
    msgs = events(job_id)
    assert "Training on 2 processes on the CPU (gloo)." in msgs
    assert sum("Checkpoint created at step" in m for m in msgs) == 2
    assert msgs[-1] == "The job has successfully completed"
    assert sum(m.startswith("Final model") for m in msgs) == 1


class KillRank1:
    """The worker's sink, passed through; at the metrics of RL step ``step`` it SIGKILLs rank 1 (after the
    checkpoint of the step before: the job has a state to resume from)."""

    def __init__(self, sink: Any, step: int) -> None:
        self.sink = sink
        self.step = step
        self.killed: int | None = None

    def message(self, text: str, *, level: Any = "info") -> None:
        self.sink.message(text, level=level)

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self.sink.metrics(text, data)
        if data.get("step") == self.step and data.get("stage") == "rl" and self.killed is None:
            self.killed = ranks_of_this_process()[1]
            os.kill(self.killed, signal.SIGKILL)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        self.sink.checkpoint_saved(step, path, metrics)

    def checkpoint_removed(self, step: int) -> None:
        self.sink.checkpoint_removed(step)

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        self.sink.estimate(finish_at, step=step, total_steps=total_steps)


@pytest.mark.slow
def test_a_killed_rank_requeues_the_job_and_it_resumes_from_its_last_checkpoint(two_process_job, monkeypatch):
    from workers.runner import run_training

    job_id = two_process_job()
    real = trainer.launch.launch_job
    killers: list[KillRank1] = []

    def killing(spec, sink, control, workdir, launch, **kw):  # type: ignore[no-untyped-def]
        killers.append(KillRank1(sink, step=4))
        return real(spec, killers[-1], control, workdir, launch, **kw)

    monkeypatch.setattr(trainer.launch, "launch_job", killing)
    assert run_training(job_id, worker="w1", task_id=None) == "requeued"
    assert killers[0].killed is not None
    wait_until(lambda: not ranks_of_this_process(), 10, what="the ranks to end")  # rank 0 went too: no orphan
    job = job_row(job_id)
    assert job.status == "queued" and job.attempt == 1
    assert job.task_id  # sent again at once (its organization's turn: it has a free slot)
    assert any(m.startswith("A training process died") and "re-queued" in m for m in events(job_id))
    assert training_steps(job_id)[-1] == 4

    monkeypatch.setattr(trainer.launch, "launch_job", real)
    assert run_training(job_id, worker="w2", task_id=None) == "succeeded"
    job = job_row(job_id)
    assert job.status == "succeeded" and job.attempt == 2
    msgs = events(job_id)
    assert any("Resuming at step 3" in m for m in msgs)  # from the checkpoint of step 3, not from scratch
    assert training_steps(job_id) == [1, 2, 3, 4, 5]  # the recomputed step 4 replaced the first attempt's


def test_dead_ranks_requeue_until_the_reapers_attempt_limit(two_process_job, monkeypatch):
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.session import session_scope
    from workers.runner import run_training
    from workers.tasks.reap_jobs_task import MAX_ATTEMPTS

    seen: list[Any] = []

    def dying(spec, sink, control, workdir, launch, **kw):  # type: ignore[no-untyped-def]
        seen.append(launch)
        raise RanksFailed(1, {0: "RuntimeError: Connection closed by peer"})

    monkeypatch.setattr(trainer.launch, "launch_job", dying)
    job_id = two_process_job()
    assert run_training(job_id, worker="w1", task_id=None) == "requeued"
    assert seen[0].nproc == 2 and seen[0].chosen_backend == "gloo"
    assert job_row(job_id).status == "queued"
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(losses=MAX_ATTEMPTS - 1))
    assert run_training(job_id, worker="w1", task_id=None) == "failed"
    job = job_row(job_id)
    assert job.status == "failed" and job.error["code"] == "internal_error"
    assert f"died in {MAX_ATTEMPTS} attempts" in job.error["message"]
    assert "Connection closed by peer" in job.error["message"]


def test_a_ranks_trainer_error_fails_the_job_with_its_code(two_process_job, monkeypatch):
    from workers.runner import run_training

    def refusing(spec, sink, control, workdir, launch, **kw):  # type: ignore[no-untyped-def]
        raise trainer.TrainerError("too big", code="insufficient_memory", param="model")

    monkeypatch.setattr(trainer.launch, "launch_job", refusing)
    job_id = two_process_job()
    assert run_training(job_id, worker="w1", task_id=None) == "failed"
    assert job_row(job_id).error == {"code": "insufficient_memory", "message": "too big", "param": "model"}
