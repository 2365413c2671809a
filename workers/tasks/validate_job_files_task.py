"""Validate a job's uploads line by line, then queue it for training (or fail it like OpenAI does)."""

from __future__ import annotations

import logging

from celery import Task
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core import jobstore
from core.db.models import Job
from core.db.retry import is_transient
from core.db.session import session_scope
from core.queue import TRAIN_JOB, VALIDATE_JOB_FILES, enqueue
from core.settings import get_settings
from core.storage import StorageError
from openrft.validation import validate_file
from workers.celery_app import celery_app
from workers.runner import copy_inputs, data_path, storage_problem, store_inputs
from workers.tasks.train_job_task import retry_countdown

log = logging.getLogger("openrft.worker")


@celery_app.task(
    name=VALIDATE_JOB_FILES, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def validate_job_files(self: Task, job_id: str) -> str:
    try:
        return _validate(job_id)
    except DBAPIError as exc:
        if is_transient(exc):
            raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from exc
        _fail_unexpected(job_id, exc)
        raise
    except Exception as exc:
        _fail_unexpected(job_id, exc)
        raise


def _fail_unexpected(job_id: str, exc: Exception) -> None:
    """A bug must end the job with an error, not leave it validating forever."""
    log.exception("validation of job %s crashed", job_id)
    with session_scope() as s:
        job = s.scalar(select(Job).where(Job.id == job_id))
        if job is not None:
            _fail(s, job, "internal_error", f"File validation failed: {type(exc).__name__}: {exc}", None)


def _validate(job_id: str) -> str:
    settings = get_settings()
    with session_scope() as s:
        job = s.scalar(select(Job).where(Job.id == job_id))
        if job is None or job.status != "validating_files":
            return "skipped"
        try:
            copy_inputs(job, settings)
        except FileNotFoundError as exc:
            param = "validation_file" if str(exc) == job.validation_file else "training_file"
            _fail(
                s, job, f"invalid_{param}", f"The file {exc} was deleted before the job could read it.", param
            )
            return "failed"
        except Exception as exc:
            problem = storage_problem(exc, settings.jobs_dir)
            if problem is None:
                raise
            _fail(s, job, "storage_error", problem.replace("Training stopped", "Validation stopped"), None)
            return "failed"
        method = job.method["type"]
        for which in ("training", "validation"):
            if which == "validation" and not job.validation_file:
                continue
            report = validate_file(
                data_path(settings, job.id, which), method, max_line_bytes=settings.max_line_bytes
            )
            if not report.ok:
                param = f"{which}_file"
                _fail(s, job, f"invalid_{param}", report.summary(f"{which} file"), param)
                return "failed"
            jobstore.add_event(s, job.pk, f"{which.capitalize()} file validated: {report.examples} examples.")
        try:
            store_inputs(job, settings)
        except StorageError as exc:
            _fail(
                s,
                job,
                "storage_error",
                f"Validation stopped: the job's files could not be stored ({exc}).",
                None,
            )
            return "failed"
        if not jobstore.transition(s, job.id, "queued", from_=("validating_files",)):
            s.rollback()  # cancelled while its files were read: no "validated" events after the cancel
            return "skipped"
        # Its place among its own organization's queued jobs: other tenants' work is not theirs to count.
        ahead = (
            s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.status == "queued", Job.org_pk == job.org_pk, Job.pk < job.pk)
            )
            or 0
        )
        jobstore.add_event(
            s,
            job.pk,
            "Files validated, moving job to queued state"
            + (f" (position {ahead + 1} among your organization's queued jobs)" if ahead else ""),
            data={"queue_position": ahead + 1},
        )
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        job.task_id = enqueue(TRAIN_JOB, job_id)
    return "queued"


def _fail(s: Session, job: Job, code: str, message: str, param: str | None) -> None:
    if jobstore.transition(
        s,
        job.id,
        "failed",
        from_=("validating_files",),
        error={"code": code, "message": message, "param": param},
    ):
        jobstore.add_event(s, job.pk, message, level="error")
        log.info("job %s failed validation: %s", job.id, message)
