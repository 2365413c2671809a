from __future__ import annotations

from openai.types import model as sdk

__all__ = ["Model"]


class Model(sdk.Model):
    """A base model, or a fine-tuned model / checkpoint (``parent`` is the model it was trained from)."""

    parent: str | None = None
    root: str | None = None
