"""The service's tables. Every public object has an opaque string ``id`` and an internal ``pk`` that orders
rows for cursor pagination (``after=<id>`` becomes ``pk < pk_of(id)``, an index range scan)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db.base import PK, Base, JSONType, UTCDateTime, utcnow


class Organization(Base):
    __tablename__ = "organizations"

    pk: Mapped[int] = mapped_column(PK, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """Keys are stored as SHA-256 digests; ``prefix`` (public, unique) finds the row, then the digest is
    compared in constant time."""

    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(PK, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_pk: Mapped[int] = mapped_column(ForeignKey("organizations.pk", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    organization: Mapped[Organization] = relationship(lazy="joined")


class File(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_org_pk_pk", "org_pk", "pk"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_pk: Mapped[int] = mapped_column(ForeignKey("organizations.pk", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(PK)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="processed")
    status_details: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_org_pk_pk", "org_pk", "pk"),
        Index("ix_jobs_status", "status"),
    )

    pk: Mapped[int] = mapped_column(PK, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_pk: Mapped[int] = mapped_column(ForeignKey("organizations.pk", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(256))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(PK)
    status: Mapped[str] = mapped_column(String(32), default="validating_files")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    estimated_finish: Mapped[datetime | None] = mapped_column(UTCDateTime())
    trained_tokens: Mapped[int | None] = mapped_column(PK)
    method: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # What the job was validated into: the OpenRFT options with defaults (secrets masked) and the plan.
    resolved_config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    openrft: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSONType)
    integrations: Mapped[list[Any] | None] = mapped_column(JSONType)
    result_files: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Worker bookkeeping: which Celery task runs it, who holds it and until when (a lease renewed by
    # heartbeats, so a vanished worker is noticed), how many times it started, and where its snapshot is:
    # the path on the disk of the worker that wrote it, and its object in the storage (any worker's way in).
    task_id: Mapped[str | None] = mapped_column(String(64))
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Involuntary ends of an attempt (a lost worker, dead training processes): the crash budget. A user's
    # pause and resume, or a graceful stop, start attempts without spending it.
    losses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(256))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    snapshot_path: Mapped[str | None] = mapped_column(Text)
    snapshot_key: Mapped[str | None] = mapped_column(String(512))

    organization: Mapped[Organization] = relationship(lazy="joined")


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_pk_pk", "job_pk", "pk"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        Index("ix_checkpoints_job_pk_pk", "job_pk", "pk"),
        UniqueConstraint("job_pk", "step_number", name="uq_checkpoints_job_step"),
    )

    pk: Mapped[int] = mapped_column(PK, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"))
    step_number: Mapped[int] = mapped_column(Integer)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FineTunedModel(Base):
    """A servable fine-tuned model: a job's final model or one of its checkpoints."""

    __tablename__ = "fine_tuned_models"
    __table_args__ = (Index("ix_fine_tuned_models_org_pk_pk", "org_pk", "pk"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True)
    id: Mapped[str] = mapped_column(String(512), unique=True)
    org_pk: Mapped[int] = mapped_column(ForeignKey("organizations.pk", ondelete="CASCADE"))
    job_pk: Mapped[int | None] = mapped_column(ForeignKey("jobs.pk", ondelete="SET NULL"), index=True)
    base_model: Mapped[str] = mapped_column(String(256))
    parent: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16), default="final")
    step_number: Mapped[int | None] = mapped_column(Integer)
    # The model's directory on the disk of the worker that trained it, and its object in the storage, from
    # which any other machine fetches it (NULL with OPENRFT_JOB_ARTIFACTS=local, or if the upload failed).
    path: Mapped[str] = mapped_column(Text)
    storage_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    organization: Mapped[Organization] = relationship(lazy="joined")
