"""The worker's glue around the trainer, with the trainer replaced by small real stand-ins that write
files and report through the same sink and control (the real trainer is exercised in tests/e2e)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import trainer
from tests.workers.conftest import events, job_row
from trainer.interface import JobResult, JobSpec, TrainerError


def _queue(job_id: str) -> None:
    from workers.tasks.validate_job_files_task import validate_job_files

    assert validate_job_files(job_id) == "queued"


def _succeeding_trainer(spec: JobSpec, sink, control, workdir: Path) -> JobResult:
    assert spec.training_file.exists() and spec.grader and spec.grader["type"] == "string_check"
    final = workdir / "final"
    final.mkdir(parents=True, exist_ok=True)
    (final / "adapter_config.json").write_text("{}")
    sink.metrics("Step 1/1", {"step": 1, "total_steps": 1, "train_mean_reward": 0.5})
    sink.checkpoint_saved(1, final, {"step": 1, "full_valid_mean_reward": 0.5})
    results = workdir / "results.csv"
    results.write_text("step,train_mean_reward\n1,0.5\n")
    rollouts = workdir / "rollouts.jsonl"
    rollouts.write_text('{"step": 1, "stage": "rl", "prompt": "q", "completion": "a", "reward": 0.5}\n')
    return JobResult(
        status="succeeded", model_dir=final, result_file=results, rollouts_file=rollouts, trained_tokens=123
    )


@pytest.fixture
def fake_trainer(monkeypatch):
    def use(fn):
        monkeypatch.setattr(trainer, "run_job", fn, raising=False)

    return use


def test_success_registers_model_checkpoint_and_results(new_job, fake_trainer, client, key):
    from workers.runner import run_training

    fake_trainer(_succeeding_trainer)
    job_id = new_job(suffix="demo")
    _queue(job_id)
    assert run_training(job_id, worker="w1", task_id="t1") == "succeeded"
    job = job_row(job_id)
    assert job.status == "succeeded" and job.trained_tokens == 123 and job.finished_at
    assert job.fine_tuned_model == f"ft:tiny-test:{job.organization.name}:demo:{job_id}"
    auth = {"Authorization": f"Bearer {key}"}
    results = job.result_files
    assert len(results) == 2  # the metrics CSV, then the sampled rollouts
    metas = [client.get(f"/v1/files/{r}", headers=auth).json() for r in results]
    assert [m["purpose"] for m in metas] == ["fine-tune-results"] * 2
    assert [m["filename"] for m in metas] == [f"{job_id}-results.csv", f"{job_id}-rollouts.jsonl"]
    assert client.get(f"/v1/files/{results[0]}/content", headers=auth).text.startswith("step,")
    assert client.get(f"/v1/files/{results[1]}/content", headers=auth).json()["completion"] == "a"
    models = [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]]
    assert job.fine_tuned_model in models and f"{job.fine_tuned_model}:ckpt-step-1" not in models
    ckpt = client.get(f"/v1/models/{job.fine_tuned_model}:ckpt-step-1", headers=auth)
    assert ckpt.status_code == 200  # a model to retrieve and chat with, not one that models.list shows
    msgs = events(job_id)
    assert msgs[-1] == "The job has successfully completed"
    assert "Step 1/1" in msgs


def test_trainer_error_fails_the_job_with_its_code(new_job, fake_trainer):
    from workers.runner import run_training

    def failing(spec, sink, control, workdir):
        raise TrainerError("no such model", code="model_not_available", param="model")

    fake_trainer(failing)
    job_id = new_job()
    _queue(job_id)
    assert run_training(job_id, worker="w1", task_id=None) == "failed"
    job = job_row(job_id)
    assert job.status == "failed" and job.error == {
        "code": "model_not_available",
        "message": "no such model",
        "param": "model",
    }


def test_crash_fails_the_job_and_reraises(new_job, fake_trainer):
    from workers.runner import run_training

    def crashing(spec, sink, control, workdir):
        raise RuntimeError("boom")

    fake_trainer(crashing)
    job_id = new_job()
    _queue(job_id)
    with pytest.raises(RuntimeError):
        run_training(job_id, worker="w1", task_id=None)
    job = job_row(job_id)
    assert job.status == "failed" and job.error["code"] == "internal_error" and "boom" in job.error["message"]


def _waiting_trainer(expect: str):
    """Runs 'steps' until the control says stop; reports how it ended."""

    def run(spec, sink, control, workdir):
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            req = control.poll()
            if req == "cancel":
                return JobResult(status="cancelled")
            if req == "pause":
                snap = workdir / "snapshot"
                snap.mkdir(parents=True, exist_ok=True)
                return JobResult(status="paused", snapshot_dir=snap)
            time.sleep(0.05)
        raise AssertionError(f"control never said {expect}")

    return run


@pytest.fixture
def fast_control(app_settings, monkeypatch):
    monkeypatch.setattr(app_settings, "control_poll_seconds", 0.1)
    monkeypatch.setattr(app_settings, "worker_heartbeat_seconds", 0.2)


def test_cancel_reaches_a_running_job(new_job, fake_trainer, client, key, fast_control):
    from workers.runner import run_training

    fake_trainer(_waiting_trainer("cancel"))
    job_id = new_job()
    _queue(job_id)
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(run_training(job_id, worker="w1", task_id=None)))
    t.start()
    from tests.support import wait_until

    wait_until(lambda: job_row(job_id).status == "running", 10)
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {key}"})
    t.join(10)
    assert out == ["cancelled"]
    assert job_row(job_id).status == "cancelled"
    assert events(job_id)[-1] == "Worker w1 stopped training after the cancel request."


def test_pause_snapshot_then_resume_passes_the_snapshot(new_job, fake_trainer, client, key, fast_control):
    from tests.support import wait_until
    from workers.runner import run_training

    fake_trainer(_waiting_trainer("pause"))
    job_id = new_job()
    _queue(job_id)
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(run_training(job_id, worker="w1", task_id=None)))
    t.start()
    wait_until(lambda: job_row(job_id).status == "running", 10)
    auth = {"Authorization": f"Bearer {key}"}
    client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers=auth)
    t.join(10)
    assert out == ["paused"]
    job = job_row(job_id)
    assert job.status == "paused" and job.snapshot_path and not job.pause_requested
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/resume", headers=auth).json()["status"] == "queued"

    seen: list[JobSpec] = []

    def resumed(spec, sink, control, workdir):
        seen.append(spec)
        return _succeeding_trainer(spec, sink, control, workdir)

    fake_trainer(resumed)
    assert run_training(job_id, worker="w2", task_id=None) == "succeeded"
    assert seen[0].resume_from == Path(job.snapshot_path)
    assert job_row(job_id).attempt == 2


def test_two_workers_racing_never_both_run_it(new_job, app_settings):
    from workers.runner import claim

    job_id = new_job()
    _queue(job_id)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def race(i: int) -> None:
        barrier.wait()
        results.append(claim(job_id, f"w{i}", None, app_settings))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]


def test_reaper_requeues_a_job_whose_worker_vanished(new_job, app_settings, monkeypatch):
    from datetime import timedelta

    from sqlalchemy import update

    from core.db.base import utcnow
    from core.db.models import Job
    from core.db.session import session_scope
    from workers.runner import claim
    from workers.tasks.reap_jobs_task import MAX_ATTEMPTS, reap_jobs

    job_id = new_job()
    _queue(job_id)
    assert claim(job_id, "dead-worker", None, app_settings)
    old = utcnow() - timedelta(seconds=app_settings.job_lease_seconds + 5)
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=old))
    assert reap_jobs()["requeued"] >= 1
    job = job_row(job_id)
    assert job.status == "queued" and job.task_id
    assert any("stopped answering" in m for m in events(job_id))
    # After too many lost workers the job fails with a clear error instead of looping forever.
    with session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", losses=MAX_ATTEMPTS - 1, heartbeat_at=old)
        )
    reap_jobs()
    job = job_row(job_id)
    assert job.status == "failed" and job.error["code"] == "worker_lost" and job.losses == MAX_ATTEMPTS


def test_pauses_do_not_spend_the_crash_budget_and_a_job_failed_for_it_resumes_from_its_snapshot(
    new_job, app_settings, client, key
):
    """A user's pause/resume cycles start attempts but are not losses; a job that did fail after MAX_ATTEMPTS
    lost workers keeps its snapshot and POST .../resume starts it again from there, with a fresh budget."""
    from datetime import timedelta

    from sqlalchemy import update

    from core.db.base import utcnow
    from core.db.models import Job
    from core.db.session import session_scope
    from workers.runner import claim
    from workers.tasks.reap_jobs_task import MAX_ATTEMPTS, reap_jobs

    job_id = new_job()
    _queue(job_id)
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(MAX_ATTEMPTS + 1):  # claimed, paused, resumed: as often as the old rule allowed losses
        assert claim(job_id, "w", None, app_settings)
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(status="paused", snapshot_path="/snap"))
        assert client.post(f"/v1/fine_tuning/jobs/{job_id}/resume", headers=auth).status_code == 200
    assert claim(job_id, "w", None, app_settings)
    assert job_row(job_id).attempt == MAX_ATTEMPTS + 2 and job_row(job_id).losses == 0
    old = utcnow() - timedelta(seconds=app_settings.job_lease_seconds + 5)
    for lost in range(1, MAX_ATTEMPTS + 1):  # the worker is lost each time; only the last loss fails it
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(status="running", heartbeat_at=old))
        reap_jobs()
        job = job_row(job_id)
        assert job.losses == lost and job.status == ("failed" if lost == MAX_ATTEMPTS else "queued"), (
            job.status
        )
    assert "POST .../resume" in job.error["message"]
    resumed = client.post(f"/v1/fine_tuning/jobs/{job_id}/resume", headers=auth)
    assert (
        resumed.status_code == 200
        and resumed.json()["status"] == "queued"
        and resumed.json()["error"] is None
    )
    job = job_row(job_id)
    assert job.losses == 0 and job.snapshot_path == "/snap" and job.finished_at is None
    assert "after its workers were lost" in events(job_id)[-1]
    # Without a snapshot there is nothing to go on from: the failure stands.
    with session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="failed", losses=MAX_ATTEMPTS, snapshot_path=None, snapshot_key=None)
        )
    refused = client.post(f"/v1/fine_tuning/jobs/{job_id}/resume", headers=auth)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_job_state"


def test_a_stale_lease_can_be_taken_over_and_the_old_worker_writes_nothing(
    new_job, fake_trainer, app_settings, fast_control
):
    from datetime import timedelta

    from sqlalchemy import update

    from core.db.base import utcnow
    from core.db.models import Job
    from core.db.session import session_scope
    from workers.runner import claim, run_training

    job_id = new_job()
    _queue(job_id)

    def slow_then_succeed(spec, sink, control, workdir):
        import time

        # while this worker "hangs", its lease expires and another worker takes the job
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        assert claim(job_id, "w2", None, app_settings)
        deadline = time.monotonic() + 10
        while control.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return _succeeding_trainer(spec, sink, control, workdir)

    fake_trainer(slow_then_succeed)
    assert run_training(job_id, worker="w1", task_id=None) == "lost"
    job = job_row(job_id)
    assert job.status == "running" and job.worker == "w2" and job.fine_tuned_model is None


def test_a_wandb_integration_logs_the_jobs_metrics_to_an_offline_run(new_job, fake_trainer, app_settings):
    """integrations: [{type: wandb}] (OpenAI's shape): the job's metrics go to a Weights & Biases run, offline
    by default (OPENRFT_WANDB_MODE), under OPENRFT_HOME/wandb; the job's events say where it is."""
    from wandb.proto import wandb_internal_pb2

    from workers.runner import run_training

    fake_trainer(_succeeding_trainer)
    job_id = new_job(integrations=[{"type": "wandb", "wandb": {"project": "rft-demo", "tags": ["t1"]}}])
    _queue(job_id)
    assert run_training(job_id, worker="w1", task_id="t1") == "succeeded"
    note = next(m for m in events(job_id) if m.startswith("Logging metrics to Weights & Biases"))
    assert "project rft-demo" in note and "offline" in note and "wandb sync" in note
    runs = list((app_settings.home / "wandb").rglob("run-*.wandb"))
    run_id = job_id.replace("ftjob-", "")
    (run_file,) = [r for r in runs if run_id in r.name]
    logged: dict[str, str] = {}
    for data in _wandb_records(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                logged[item.key or "/".join(item.nested_key)] = item.value_json
    assert float(logged["train_mean_reward"]) == 0.5 and float(logged["total_steps"]) == 1.0
    assert float(logged["_step"]) == 1  # at the job's own step


def _wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a wandb run file: a 7-byte header, then LevelDB's log format (32 KiB blocks; each
    fragment has a 7-byte header: crc32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield pending
            pending = b""
