from __future__ import annotations

from typing import Literal

from openrft._models import BaseModel

__all__ = ["Model"]


class Model(BaseModel):
    """A base model, or a fine-tuned model / checkpoint (``parent`` is the model it was trained from)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    parent: str | None = None
    root: str | None = None
