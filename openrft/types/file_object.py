from __future__ import annotations

from typing import Literal

from openrft._models import BaseModel

__all__ = ["FileObject"]


class FileObject(BaseModel):
    """An uploaded file (``purpose`` fine-tune for training data, fine-tune-results for job outputs)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    """uploaded, processed or error."""
    status_details: str | None = None
    expires_at: int | None = None
