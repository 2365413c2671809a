from __future__ import annotations

from typing import Any

from openrft._models import BaseModel

__all__ = ["GraderValidateResponse"]


class GraderValidateResponse(BaseModel):
    grader: dict[str, Any]
    """The grader in its normalized form (defaults filled in)."""
