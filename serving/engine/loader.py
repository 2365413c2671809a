"""Load the base model and tokenizer the way the trainer does (same sources, same GGUF cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def load_base_model(
    source: str, *, dtype: str = "float32", cache_dir: str | Path | None = None
) -> tuple[Any, Any, str]:
    """``(model, tokenizer, resolved directory or id)`` for a local dir, an HF id or ``gguf:<pkg>/<file>``."""
    from trainer.models import load_model, load_tokenizer, resolve_model_dir

    model_dir = resolve_model_dir(source, cache_dir=Path(cache_dir) if cache_dir else None)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype=_DTYPES[dtype])
    return model, tokenizer, model_dir
