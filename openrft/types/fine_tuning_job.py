from __future__ import annotations

from typing import Any, Literal

from openrft._models import BaseModel

__all__ = [
    "ACTIVE_STATUSES",
    "STOPPED_STATUSES",
    "TERMINAL_STATUSES",
    "FineTuningJob",
    "JobError",
    "JobStatus",
]

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# Where a job stops making progress without a user action: terminal, or paused (by the user or its budget).
STOPPED_STATUSES: frozenset[str] = TERMINAL_STATUSES | {"paused"}
ACTIVE_STATUSES: frozenset[str] = frozenset({"validating_files", "queued", "running"})


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    """A fine-tuning job. ``status`` is one of :data:`JobStatus` (kept a plain string so a newer server's
    states never break parsing)."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any] = {}
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: str
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    """Unix time the service expects the job to finish (updated as it trains)."""
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] = {}
    suffix: str | None = None
    openrft: dict[str, Any] | None = None
    """The OpenRFT extension options the job was created with."""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES
