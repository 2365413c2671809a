from __future__ import annotations

from openrft._models import BaseModel

__all__ = ["ModelDeleted"]


class ModelDeleted(BaseModel):
    id: str
    object: str = "model"
    deleted: bool
