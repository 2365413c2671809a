"""Jobs across machines that share only the database and the storage, with the worker's real glue and the
trainer replaced by stand-ins that write files like it: each "machine" is its own OPENRFT_HOME (job working
dirs, caches) in this process, switched between steps; the database engine is already open on the shared
database and OPENRFT_STORAGE_DIR points every machine at the same storage root. The real trainer across two
real worker processes is tests/reliability/test_two_machines.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import trainer
from tests.workers.conftest import events, job_row
from trainer.interface import JobResult, JobSpec


@pytest.fixture
def machine(app_settings, monkeypatch, tmp_path) -> Callable[[str], Path]:
    """``machine(name)``: from now on this process is the machine ``name``; returns its home. The other
    machines' homes are moved out of sight meanwhile, so a path one of them wrote does not exist here."""
    monkeypatch.setattr(app_settings, "storage_dir", app_settings.files_dir)
    monkeypatch.setattr(app_settings, "job_artifacts", "storage")

    def on(name: str) -> Path:
        for home in tmp_path.iterdir():
            if home.name != name and not home.name.startswith("."):
                home.rename(tmp_path / f".away-{home.name}")
        if (tmp_path / f".away-{name}").exists():
            (tmp_path / f".away-{name}").rename(tmp_path / name)
        monkeypatch.setattr(app_settings, "home", tmp_path / name)
        return tmp_path / name

    return on


@pytest.fixture
def use_trainer(monkeypatch):
    def use(fn):
        monkeypatch.setattr(trainer, "run_job", fn, raising=False)

    return use


def _queue(job_id: str) -> None:
    from workers.tasks.validate_job_files_task import validate_job_files

    assert validate_job_files(job_id) == "queued"


def _checkpoint(workdir: Path, step: int, sink) -> Path:
    path = workdir / "checkpoints" / f"step-{step}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(f"weights of step {step}".encode())
    sink.checkpoint_saved(step, path, {"step": step, "full_valid_mean_reward": step / 10})
    return path


def _state(workdir: Path, step: int) -> Path:
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "state.json").write_text(json.dumps({"global_step": step}))
    return state


def _finishing(seen: list[JobSpec]):
    def run(spec, sink, control, workdir):
        seen.append(spec)
        final = workdir / "final" / "adapter"
        final.mkdir(parents=True)
        (final / "adapter_config.json").write_text("{}")
        (final / "adapter_model.safetensors").write_bytes(b"final weights")
        return JobResult(status="succeeded", model_dir=final, trained_tokens=7)

    return run


def _object(app_settings, key: str | None) -> Path | None:
    return None if key is None else app_settings.files_dir / key


def test_paused_on_one_machine_resumed_on_another_served_from_a_third(
    new_job, machine, use_trainer, client, key, app_settings
):
    from workers.runner import run_training

    auth = {"Authorization": f"Bearer {key}"}
    job_id = new_job()
    machine("validator")
    _queue(job_id)  # the inputs' copies land on the validating machine, and in the storage

    home_a = machine("a")

    def pausing(spec, sink, control, workdir):
        assert spec.training_file.read_text().count("\n") == 4  # fetched from the storage
        _state(workdir, 0)
        _checkpoint(workdir, 1, sink)
        state = _state(workdir, 1)
        return JobResult(status="paused", snapshot_dir=state)

    use_trainer(pausing)
    assert run_training(job_id, worker="wa", task_id=None) == "paused"
    paused = job_row(job_id)
    assert paused.snapshot_key and paused.snapshot_path and Path(paused.snapshot_path).is_relative_to(home_a)
    snapshot = _object(app_settings, paused.snapshot_key)
    assert snapshot is not None and snapshot.is_file()
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/resume", headers=auth).json()["status"] == "queued"

    home_b = machine("b")
    seen: list[JobSpec] = []
    finish = _finishing(seen)

    def resumed(spec, sink, control, workdir):
        state = spec.resume_from
        assert state is not None and state.is_relative_to(home_b)  # B's copy, not A's path
        assert json.loads((state / "state.json").read_text()) == {"global_step": 1}
        ckpt = workdir / "checkpoints" / "step-1"
        assert (ckpt / "adapter_model.safetensors").read_bytes() == b"weights of step 1"
        return finish(spec, sink, control, workdir)

    use_trainer(resumed)
    assert run_training(job_id, worker="wb", task_id=None) == "succeeded"
    assert seen
    done = job_row(job_id)
    assert done.snapshot_key is None and not snapshot.exists()  # nothing resumes a finished job

    # The third machine (an API process) has neither working directory: it serves from the storage.
    home_c = machine("c")
    import asyncio

    from app.inference import StoredModels, model_lookup
    from serving.registry import ModelRegistry

    registry = ModelRegistry(
        {"tiny-test": "unused"}, model_lookup(done.org_pk), files=StoredModels(app_settings)
    )
    resolved = asyncio.run(registry.resolve(done.fine_tuned_model))
    assert resolved.adapter_path is not None and resolved.adapter_path.is_relative_to(home_c / "cache")
    assert (resolved.adapter_path / "adapter_model.safetensors").read_bytes() == b"final weights"
    ckpt = asyncio.run(registry.resolve(f"{done.fine_tuned_model}:ckpt-step-1"))
    assert ckpt.adapter_path is not None and ckpt.adapter_path.is_relative_to(home_c / "cache")

    # On B itself, the worker's own directory is used: nothing is copied.
    machine("b")
    again = asyncio.run(registry.resolve(done.fine_tuned_model))
    assert again.adapter_path == home_b / "jobs" / job_id / "final" / "adapter"

    # Deleting the model deletes its object and the cached copy.
    from sqlalchemy import select

    from core.db.models import FineTunedModel
    from core.db.session import session_scope

    with session_scope() as s:
        model_key = s.scalar(
            select(FineTunedModel.storage_key).where(FineTunedModel.id == done.fine_tuned_model)
        )
    machine("c")
    assert client.delete(f"/v1/models/{done.fine_tuned_model}", headers=auth).status_code == 200
    gone = _object(app_settings, model_key)
    assert gone is not None and not gone.exists() and not resolved.adapter_path.exists()


def test_a_killed_worker_is_resumed_elsewhere_from_the_last_uploaded_snapshot(
    new_job, machine, use_trainer, app_settings
):
    from sqlalchemy import update

    from core.db.base import utcnow
    from core.db.models import Job
    from core.db.session import session_scope
    from workers.runner import run_training
    from workers.tasks.reap_jobs_task import reap_jobs

    class Killed(BaseException):
        """Stands for SIGKILL: nothing of the worker's own error handling runs."""

    job_id = new_job()
    machine("a")
    _queue(job_id)

    def killed_after_two_checkpoints(spec, sink, control, workdir):
        _state(workdir, 0)
        _checkpoint(workdir, 1, sink)  # uploads the state as it is now: step 0's
        _state(workdir, 1)
        _checkpoint(workdir, 2, sink)  # ... step 1's
        _state(workdir, 2)  # never uploaded: the worker dies before its next checkpoint
        raise Killed

    use_trainer(killed_after_two_checkpoints)
    with pytest.raises(Killed):
        run_training(job_id, worker="wa", task_id=None)
    first = job_row(job_id)
    assert first.status == "running" and first.snapshot_key
    stale = utcnow() - timedelta(seconds=app_settings.job_lease_seconds + 5)
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=stale))
    assert reap_jobs()["requeued"] >= 1

    home_b = machine("b")
    seen: list[JobSpec] = []
    finish = _finishing(seen)

    def resumed(spec, sink, control, workdir):
        assert spec.resume_from == home_b / "jobs" / job_id / "state"
        assert json.loads((spec.resume_from / "state.json").read_text()) == {"global_step": 1}
        for step in (1, 2):
            got = (workdir / "checkpoints" / f"step-{step}" / "adapter_model.safetensors").read_bytes()
            assert got == f"weights of step {step}".encode()
        _checkpoint(workdir, 2, sink)  # recomputed: replaces A's checkpoint of step 2
        return finish(spec, sink, control, workdir)

    use_trainer(resumed)
    assert run_training(job_id, worker="wb", task_id=None) == "succeeded"
    assert seen
    objects = sorted(
        p.name for p in (app_settings.files_dir / first.organization.id / "jobs" / job_id).rglob("*.tar")
    )
    # one object per kept checkpoint (A's step 2 replaced by B's) and the model; no snapshot any more
    assert [n.split("-")[0] for n in objects] == ["model", "step", "step"], objects
    assert any("Resuming job" in m and "wb" in m for m in events(job_id))


def test_a_worker_that_lost_the_job_cannot_point_it_at_its_snapshot(
    new_job, machine, use_trainer, app_settings
):
    from workers.runner import claim, run_training

    job_id = new_job()
    machine("a")
    _queue(job_id)

    def overtaken(spec, sink, control, workdir):
        from sqlalchemy import update

        from core.db.base import utcnow
        from core.db.models import Job
        from core.db.session import session_scope

        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        assert claim(job_id, "wb", None, app_settings)
        _state(workdir, 3)
        _checkpoint(workdir, 3, sink)
        return JobResult(status="paused", snapshot_dir=workdir / "state")

    use_trainer(overtaken)
    assert run_training(job_id, worker="wa", task_id=None) in ("lost", "paused")
    row = job_row(job_id)
    assert row.worker == "wb" and row.snapshot_key is None
    snapshots = list((app_settings.files_dir / row.organization.id / "jobs" / job_id).glob("snapshot-*"))
    assert snapshots == []


def test_local_artifacts_upload_nothing(new_job, machine, use_trainer, app_settings, monkeypatch):
    from workers.runner import run_training

    monkeypatch.setattr(app_settings, "job_artifacts", "local")
    job_id = new_job()
    machine("only")
    _queue(job_id)
    use_trainer(_finishing([]))
    assert run_training(job_id, worker="w", task_id=None) == "succeeded"
    row = job_row(job_id)
    assert not (app_settings.files_dir / row.organization.id / "jobs").exists()
