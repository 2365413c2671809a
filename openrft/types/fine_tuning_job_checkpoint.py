from __future__ import annotations

from typing import Literal

from openrft._models import BaseModel

__all__ = ["CheckpointMetrics", "FineTuningJobCheckpoint"]


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    """A saved checkpoint; ``fine_tuned_model_checkpoint`` is a model name chat completions accept."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: CheckpointMetrics = CheckpointMetrics()
