"""Rows to OpenAI-shaped response objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.schemas import files as fs
from app.schemas import jobs as js
from core.db import models as db


def ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def file_object(row: db.File) -> fs.FileObject:
    return fs.FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=int(row.created_at.timestamp()),
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,  # type: ignore[arg-type]
        status_details=row.status_details,
        expires_at=ts(row.expires_at),
    )


def job_object(row: db.Job) -> js.Job:
    return js.Job(
        id=row.id,
        created_at=int(row.created_at.timestamp()),
        error=js.JobError(**row.error) if row.error else None,
        fine_tuned_model=row.fine_tuned_model,
        finished_at=ts(row.finished_at),
        hyperparameters=_legacy_hyperparameters(row.method),
        model=row.model,
        organization_id=row.organization.id,
        result_files=list(row.result_files or []),
        seed=row.seed,
        status=row.status,  # type: ignore[arg-type]
        trained_tokens=row.trained_tokens,
        training_file=row.training_file,
        validation_file=row.validation_file,
        estimated_finish=ts(row.estimated_finish),
        integrations=row.integrations,
        metadata=row.metadata_,
        method=row.method,
        suffix=row.suffix,
        openrft=(row.resolved_config or {}).get("openrft"),
    )


def _legacy_hyperparameters(method: dict[str, Any]) -> dict[str, Any]:
    # OpenAI still echoes the method's hyperparameters at the top level (deprecated field).
    inner = method.get(method.get("type", ""), {}) or {}
    hp = inner.get("hyperparameters") or {}
    return {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier") if k in hp}


def event_object(row: db.JobEvent) -> js.JobEvent:
    return js.JobEvent(
        id=row.id,
        created_at=int(row.created_at.timestamp()),
        level=row.level,  # type: ignore[arg-type]
        message=row.message,
        data=row.data,
        type=row.type,  # type: ignore[arg-type]
    )


def checkpoint_object(row: db.Checkpoint, job_id: str) -> js.Checkpoint:
    return js.Checkpoint(
        id=row.id,
        created_at=int(row.created_at.timestamp()),
        fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
        fine_tuning_job_id=job_id,
        step_number=row.step_number,
        metrics=js.CheckpointMetrics(**(row.metrics or {})),
    )
