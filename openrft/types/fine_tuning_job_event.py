from __future__ import annotations

from typing import Any, Literal

from openrft._models import BaseModel

__all__ = ["FineTuningJobEvent"]


class FineTuningJobEvent(BaseModel):
    """One line of a job's log. ``type == "metrics"`` events carry the step's numbers in ``data``
    (``step``, ``total_steps``, ``train_mean_reward``, ``full_valid_mean_reward``, ``timing``, ...)."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    data: dict[str, Any] | None = None
    type: str = "message"
