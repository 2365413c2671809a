"""Job state shared by the API and the workers (no web framework here): events, status changes and the
registration of fine-tuned models. Every status change is a conditional UPDATE, so a late writer (a worker
finishing after the user cancelled) can never overwrite a newer state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core import ids
from core.db.base import utcnow
from core.db.models import Checkpoint, FineTunedModel, Job, JobEvent

ACTIVE = ("validating_files", "queued", "running", "paused")
TERMINAL = ("succeeded", "failed", "cancelled")


def storable(value: Any) -> Any:
    """``value`` with NUL characters replaced (U+FFFD) in every string, keys included: PostgreSQL text and
    JSONB refuse them, and model output, grader messages and user code can contain them."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def add_event(
    session: Session,
    job_pk: int,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(
        id=ids.event_id(),
        job_pk=job_pk,
        level=level,
        type=type,
        message=storable(message),
        data=storable(data),
    )
    session.add(event)
    session.flush()
    return event


MAX_LOSSES = 3
"""Involuntary ends of attempts (lost worker, dead training processes) before a job fails for good; a job failed
so keeps its snapshot and may be resumed (``resumable_after_failure``)."""


def resumable_after_failure(job: Job) -> bool:
    """A job that failed for its crash budget, with a snapshot to go on from."""
    return job.status == "failed" and job.losses >= MAX_LOSSES and bool(job.snapshot_path or job.snapshot_key)


def transition(
    session: Session, job_id: str, to: str, *, from_: Iterable[str], worker: str | None = None, **values: Any
) -> bool:
    """Move ``job_id`` to status ``to`` if it is in one of ``from_`` (and, with ``worker``, still held by
    that worker); True if this call did it."""
    if to in TERMINAL:
        values.setdefault("finished_at", utcnow())
    query = update(Job).where(Job.id == job_id, Job.status.in_(tuple(from_)))
    if worker is not None:
        query = query.where(Job.worker == worker)
    result = session.execute(query.values(status=to, **{k: storable(v) for k, v in values.items()}))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fine_tuned_model_name(job: Job) -> str:
    return f"ft:{job.model}:{job.organization.name}:{job.suffix or ''}:{job.id}"


def checkpoint_model_name(job: Job, step: int) -> str:
    return f"{fine_tuned_model_name(job)}:ckpt-step-{step}"


def register_checkpoint(
    session: Session,
    job: Job,
    step: int,
    path: str,
    metrics: dict[str, Any],
    *,
    storage_key: str | None = None,
) -> Checkpoint:
    """Record a checkpoint and make it servable; idempotent per (job, step) so a resumed job that reaches
    the same step again replaces rather than duplicates it."""
    name = checkpoint_model_name(job, step)
    ckpt = session.scalar(
        select(Checkpoint).where(Checkpoint.job_pk == job.pk, Checkpoint.step_number == step)
    )
    if ckpt is None:
        ckpt = Checkpoint(
            id=ids.checkpoint_id(), job_pk=job.pk, step_number=step, fine_tuned_model_checkpoint=name
        )
        session.add(ckpt)
    ckpt.path = path
    ckpt.metrics = storable(metrics)
    _upsert_model(session, job, name, path, storage_key, kind="checkpoint", step=step)
    return ckpt


def remove_checkpoint(session: Session, job: Job, step: int) -> str | None:
    """Forget the checkpoint of ``step``; returns its storage object, to delete once this commits."""
    name = checkpoint_model_name(job, step)
    key = model_storage_key(session, name)
    session.execute(delete(Checkpoint).where(Checkpoint.job_pk == job.pk, Checkpoint.step_number == step))
    session.execute(delete(FineTunedModel).where(FineTunedModel.id == name))
    return key


def register_final_model(session: Session, job: Job, path: str, *, storage_key: str | None = None) -> str:
    name = fine_tuned_model_name(job)
    _upsert_model(session, job, name, path, storage_key, kind="final")
    return name


def model_storage_key(session: Session, name: str) -> str | None:
    """The storage object of the servable model ``name`` (None: none, or not stored)."""
    return session.scalar(select(FineTunedModel.storage_key).where(FineTunedModel.id == name))


def _upsert_model(
    session: Session,
    job: Job,
    name: str,
    path: str,
    storage_key: str | None,
    *,
    kind: str,
    step: int | None = None,
) -> None:
    """The servable model row ``name`` pointing at ``path`` and ``storage_key`` (a re-run of the same step
    moves them)."""
    model = session.scalar(select(FineTunedModel).where(FineTunedModel.id == name))
    if model is None:
        model = FineTunedModel(
            id=name,
            org_pk=job.org_pk,
            job_pk=job.pk,
            base_model=job.model,
            parent=job.model,
            kind=kind,
            step_number=step,
            path=path,
        )
        session.add(model)
    model.path = path
    model.storage_key = storage_key
    session.flush()
