from __future__ import annotations

from openrft._models import BaseModel

__all__ = ["FileDeleted"]


class FileDeleted(BaseModel):
    id: str
    object: str = "file"
    deleted: bool
