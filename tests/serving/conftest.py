"""Fixtures for the serving tests: a tiny model whose greedy output varies, two different LoRA adapters,
and a started CPU engine on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def make_varied_tiny_model(out_dir: Path) -> Path:
    """The trainer's tiny model with larger random weights, so greedy decoding does not repeat one token."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.support.tiny import build_tiny_model

    build_tiny_model(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.25)
    model.save_pretrained(out_dir)
    return out_dir


def make_adapter(base_dir: Path, out_dir: Path, *, rank: int, targets: list[str], seed: int) -> Path:
    """A PEFT LoRA adapter with random (non-zero) A and B, so it changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.mul_(3.0)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def varied_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_varied_tiny_model(tmp_path_factory.mktemp("varied-tiny"))


@pytest.fixture(scope="session")
def adapter_dirs(varied_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    all_linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return {
        "qv": make_adapter(varied_model_dir, root / "qv", rank=4, targets=["q_proj", "v_proj"], seed=10),
        "all": make_adapter(varied_model_dir, root / "all", rank=8, targets=all_linear, seed=11),
    }


def build_engine(model_dir: Path, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.engine.engine import InferenceEngine

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    engine = InferenceEngine(model, tokenizer, **kwargs)
    engine.start()
    return engine


@pytest.fixture(scope="module")
def engine(varied_model_dir: Path, adapter_dirs: dict[str, Path]) -> Iterator[Any]:
    engine = build_engine(varied_model_dir, max_batch_size=8, max_loras=2)
    for name, path in adapter_dirs.items():
        engine.adapters.register(name, path)
    yield engine
    engine.shutdown()
