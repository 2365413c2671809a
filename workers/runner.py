"""Runs one training attempt of a job: claim it, build the trainer's spec, call the trainer, record the
outcome. Every write is conditional on this worker still holding the job."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app import ids, jobstore
from app.db.base import utcnow
from app.db.models import File, Job
from app.db.session import session_scope
from app.grading import grader_settings
from app.settings import Settings, get_settings
from app.storage import get_storage
from trainer.interface import JobResult, JobSpec, TrainerError
from workers.control import DbControl, DbEventSink

log = logging.getLogger("openrft.worker")


def job_workdir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


def data_path(settings: Settings, job_id: str, which: str) -> Path:
    return job_workdir(settings, job_id) / "data" / f"{which}.jsonl"


def claim(job_id: str, worker: str, task_id: str | None, settings: Settings) -> bool:
    """Atomically take a queued job, or a running one whose lease expired. Two workers racing for the
    same job: exactly one UPDATE matches."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.job_lease_seconds)
    with session_scope() as s:
        result = s.execute(
            update(Job)
            .where(
                Job.id == job_id,
                or_(Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < stale)),
            )
            .values(
                status="running",
                worker=worker,
                task_id=task_id,
                heartbeat_at=now,
                attempt=Job.attempt + 1,
                started_at=func.coalesce(Job.started_at, now),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def build_spec(job: Job, settings: Settings) -> JobSpec:
    mtype = job.method["type"]
    inner = job.method.get(mtype) or {}
    validation = data_path(settings, job.id, "validation")
    return JobSpec(
        job_id=job.id,
        method=mtype,
        base_model=job.model,
        model_source=settings.all_base_models[job.model],
        training_file=data_path(settings, job.id, "training"),
        validation_file=validation if job.validation_file else None,
        grader=inner.get("grader"),
        response_format=inner.get("response_format"),
        hyperparameters=dict(inner.get("hyperparameters") or {}),
        openrft=dict(job.openrft or {}),
        seed=job.seed,
        resume_from=Path(job.snapshot_path) if job.snapshot_path else None,
        grader_settings=grader_settings(settings),
        cache_dir=settings.cache_dir / "models",
    )


def run_training(job_id: str, *, worker: str, task_id: str | None) -> str:
    """One attempt at a job; returns what happened (for logs and tests)."""
    settings = get_settings()
    if not claim(job_id, worker, task_id, settings):
        log.info("job %s is not claimable (taken, cancelled or paused); skipping", job_id)
        return "skipped"
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        spec = build_spec(job, settings)
        attempt = job.attempt
        word = "Resuming" if spec.resume_from or attempt > 1 else "Fine-tuning"
        jobstore.add_event(s, job.pk, f"{word} job {job.id} (attempt {attempt}) on worker {worker}.")

    control = DbControl(
        job_id,
        worker,
        poll_seconds=settings.control_poll_seconds,
        heartbeat_seconds=settings.worker_heartbeat_seconds,
    )
    control.start()
    try:
        from trainer import run_job

        result = run_job(spec, DbEventSink(job_id), control, job_workdir(settings, job_id))
    except TrainerError as exc:
        _fail(job_id, worker, exc.code, exc.message, exc.param)
        return "failed"
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        _fail(job_id, worker, "internal_error", f"Training failed: {type(exc).__name__}: {exc}", None)
        raise
    finally:
        control.stop()
    if control.lost_lease:
        log.warning("job %s: lease lost to another worker; leaving the job to it", job_id)
        return "lost"
    return _finish(job_id, worker, result, settings)


def _fail(job_id: str, worker: str, code: str, message: str, param: str | None) -> None:
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        if jobstore.transition(
            s,
            job_id,
            "failed",
            from_=("running",),
            worker=worker,
            error={"code": code, "message": message, "param": param},
        ):
            jobstore.add_event(s, job.pk, f"Job failed: {message}", level="error")


def _finish(job_id: str, worker: str, result: JobResult, settings: Settings) -> str:
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        if job.worker != worker:
            return "lost"
        if result.status == "cancelled":
            # The API already set the status; this records that training really stopped (and when).
            jobstore.add_event(s, job.pk, f"Worker {worker} stopped training after the cancel request.")
            return "cancelled"
        if result.status == "paused":
            if jobstore.transition(
                s,
                job_id,
                "paused",
                from_=("running",),
                worker=worker,
                pause_requested=False,
                snapshot_path=str(result.snapshot_dir) if result.snapshot_dir else job.snapshot_path,
            ):
                jobstore.add_event(s, job.pk, "Job paused; resume it to continue from the saved snapshot.")
            return "paused"
        if result.model_dir is None:
            raise RuntimeError("the trainer reported success without a model")
        result_files = []
        if result.result_file and result.result_file.exists():
            result_files.append(_store_result_file(s, job, result.result_file))
        name = jobstore.register_final_model(s, job, str(result.model_dir))
        if jobstore.transition(
            s,
            job_id,
            "succeeded",
            from_=("running",),
            worker=worker,
            fine_tuned_model=name,
            trained_tokens=result.trained_tokens,
            result_files=result_files,
            estimated_finish=None,
        ):
            jobstore.add_event(s, job.pk, f"New fine-tuned model created: {name}")
            jobstore.add_event(s, job.pk, "The job has successfully completed")
            return "succeeded"
        return "cancelled"


def _store_result_file(session: Session, job: Job, path: Path) -> str:
    storage = get_storage()
    file_id = ids.file_id()
    key = f"{job.organization.id}/{file_id}"
    writer = storage.writer(key)
    with path.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            writer.write(block)
    digest = writer.commit()
    session.add(
        File(
            id=file_id,
            org_pk=job.org_pk,
            filename=f"{job.id}-results.csv",
            purpose="fine-tune-results",
            bytes=writer.bytes_written,
            sha256=digest,
            status="processed",
            storage_key=key,
        )
    )
    return file_id


def copy_inputs(job: Job, settings: Settings) -> None:
    """Copy the job's uploads into its working directory: the job keeps its data even if the user
    deletes the file afterwards, and the trainer reads a plain local path whatever the storage is."""
    storage = get_storage()
    with session_scope() as s:
        for which, file_id in (("training", job.training_file), ("validation", job.validation_file)):
            if not file_id:
                continue
            row = s.scalar(select(File).where(File.id == file_id, File.org_pk == job.org_pk))
            if row is None:
                raise FileNotFoundError(file_id)
            storage.copy_to(row.storage_key, data_path(settings, job.id, which))


def remove_workdir(settings: Settings, job_id: str) -> None:
    shutil.rmtree(job_workdir(settings, job_id), ignore_errors=True)
