"""Device planning without a GPU: a fake CUDA reports its properties to the code that plans precision, placement
and micro-batches (what a CPU test can check of the GPU path)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from trainer.device import Device, bytes_per_sequence, detect, micro_batches

SEVEN_B = SimpleNamespace(vocab_size=152064, hidden_size=3584, num_hidden_layers=28)


def fake_cuda(monkeypatch: pytest.MonkeyPatch, *, bf16: bool, gib: float) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda *a, **k: SimpleNamespace(total_memory=int(gib * 2**30))
    )


def test_precision_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert detect() == Device("cpu")
    fake_cuda(monkeypatch, bf16=True, gib=80)
    d = detect()
    assert (d.kind, d.bf16, d.fp16, d.torch_dtype()) == ("cuda", True, False, torch.bfloat16)
    fake_cuda(monkeypatch, bf16=False, gib=16)  # a T4 or V100: fp16 mixed precision, never bf16
    d = detect()
    assert (d.bf16, d.fp16, d.torch_dtype()) == (False, True, torch.float16)


def test_micro_batches_fit_the_device_and_keep_the_batch() -> None:
    # 64 rollouts of 512 + 1024 tokens on a 7B model: the logits alone are ~58 GB, so the batch is split.
    per_seq = bytes_per_sequence(1536, SEVEN_B)
    assert 64 * per_seq > 40 * 2**30
    big = micro_batches(
        64, tokens=1536, config=SEVEN_B, device=Device("cuda", bf16=True, total_bytes=80 * 2**30)
    )
    small = micro_batches(
        64, tokens=1536, config=SEVEN_B, device=Device("cuda", fp16=True, total_bytes=16 * 2**30)
    )
    for micro, accum in (big, small):
        assert micro * accum == 64 and micro * per_seq <= 0.3 * 80 * 2**30
    assert small[0] < big[0] and small[1] > big[1]
    assert micro_batches(64, tokens=1536, config=SEVEN_B, device=Device("cpu")) == (64, 1)  # CPU: unchanged
    assert micro_batches(6, tokens=10**6, config=SEVEN_B, device=Device("cuda", total_bytes=2**30)) == (1, 6)


def test_grpo_arguments_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.rl import grpo_args

    fake_cuda(monkeypatch, bf16=False, gib=4)
    common: dict[str, Any] = dict(
        output_dir="/nonexistent", batch_size=8, num_generations=8, learning_rate=1e-5, max_steps=1,
        max_completion_length=1024, temperature=1.0, beta=0.0, loss_type="dapo", seed=0,
    )  # fmt: skip
    # The arguments as built; the real GRPOConfig would look for the (fake) CUDA device itself.
    monkeypatch.setattr("trl.GRPOConfig", lambda **kw: SimpleNamespace(**kw))
    args = grpo_args(**common, use_cpu=False, model_config=SEVEN_B)
    assert (args.bf16, args.fp16, args.activation_checkpointing) == (False, True, True)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 64
    assert args.per_device_train_batch_size < 64
    cpu = grpo_args(**common, use_cpu=True, model_config=SEVEN_B)
    assert (cpu.bf16, cpu.fp16, cpu.per_device_train_batch_size, cpu.gradient_accumulation_steps) == (
        False, False, 64, 1,
    )  # fmt: skip


def test_the_base_model_is_placed_on_the_device_at_load(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    import torch

    from trainer import models

    moved: list[str] = []
    monkeypatch.setattr(models, "detect", lambda: Device("cuda", bf16=True, total_bytes=2**34), raising=False)
    monkeypatch.setattr("trainer.device.detect", lambda: Device("cuda", bf16=True, total_bytes=2**34))
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(str(a[0])) or self)
    model = models.load_model(str(tiny_model))
    assert moved == ["cuda"] and next(model.parameters()).dtype == torch.bfloat16
