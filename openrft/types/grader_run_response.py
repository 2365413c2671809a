from __future__ import annotations

from typing import Any

from openrft._models import BaseModel

__all__ = ["GraderRunResponse"]


class GraderRunResponse(BaseModel):
    """The score of one sample; ``metadata.errors`` says why a grader gave 0 when it failed."""

    reward: float
    sub_rewards: dict[str, Any] = {}
    model_grader_token_usage_per_model: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
