from __future__ import annotations

from typing import Any, Literal

from openai.types.fine_tuning import fine_tuning_job as sdk

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

JobError = sdk.Error


class FineTuningJob(sdk.FineTuningJob):
    """The SDK's fine-tuning job plus this service's extension. ``status`` may also be ``"paused"`` (see
    :data:`JobStatus`; responses are not validated, so a newer server's states never break parsing)."""

    openrft: dict[str, Any] | None = None
    """The OpenRFT extension options the job was created with, each resolved to its value."""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES
