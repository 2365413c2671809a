"""The multi-LoRA linear layer and adapter loading, checked against plain per-row math and PEFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from serving.engine.lora import (
    AdapterFormatError,
    LoraBatch,
    MultiLoraLinear,
    check_adapter,
    load_lora_weights,
)


def test_each_row_gets_its_own_delta() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5, bias=True)
    batch = LoraBatch()
    layer = MultiLoraLinear(base, batch, num_slots=3, max_rank=4)
    a1, b1 = torch.randn(2, 6), torch.randn(5, 2)  # rank 2, padded to 4
    a2, b2 = torch.randn(4, 6), torch.randn(5, 4)
    layer.write_slot(1, a1, b1, 0.5)
    layer.write_slot(2, a2, b2, 2.0)
    x = torch.randn(4, 3, 6)
    batch.set([1, 0, 2, 1])
    y = layer(x)
    expected = torch.stack(
        [
            base(x[0]) + 0.5 * (x[0] @ a1.T) @ b1.T,
            base(x[1]),
            base(x[2]) + 2.0 * (x[2] @ a2.T) @ b2.T,
            base(x[3]) + 0.5 * (x[3] @ a1.T) @ b1.T,
        ]
    )
    torch.testing.assert_close(y, expected)
    batch.set([2, 2, 2, 2])  # every row the same adapter: the no-gather path
    torch.testing.assert_close(layer(x), base(x) + 2.0 * (x @ a2.T) @ b2.T)
    batch.clear()
    torch.testing.assert_close(layer(x), base(x))


def test_stacks_grow_to_the_largest_rank_loaded_without_changing_resident_adapters() -> None:
    """A high --max-lora-rank (256, the training limit) costs nothing until a high-rank adapter arrives."""
    torch.manual_seed(1)
    base = nn.Linear(6, 5)
    batch = LoraBatch()
    layer = MultiLoraLinear(base, batch, num_slots=3, max_rank=256)
    a1, b1 = torch.randn(2, 6), torch.randn(5, 2)
    layer.write_slot(1, a1, b1, 1.0)
    assert layer.width == 2
    x = torch.randn(1, 3, 6)
    batch.set([1])
    before = layer(x)
    a2, b2 = torch.randn(16, 6), torch.randn(5, 16)
    layer.write_slot(2, a2, b2, 1.0)
    assert layer.width == 16
    torch.testing.assert_close(layer(x), before)  # slot 1's zero padding adds nothing
    batch.set([2])
    torch.testing.assert_close(layer(x), base(x) + (x @ a2.T) @ b2.T)
    with pytest.raises(AdapterFormatError, match="max_lora_rank"):
        MultiLoraLinear(nn.Linear(6, 5), LoraBatch(), num_slots=2, max_rank=4).write_slot(
            1, torch.zeros(8, 6), torch.zeros(5, 8), 1.0
        )


def test_write_slot_rejects_wrong_shapes() -> None:
    layer = MultiLoraLinear(nn.Linear(6, 5), LoraBatch(), num_slots=2, max_rank=4)
    with pytest.raises(AdapterFormatError, match="do not fit"):
        layer.write_slot(1, torch.zeros(2, 7), torch.zeros(5, 2), 1.0)


def test_loaded_weights_match_peft_scaling(adapter_dirs: dict[str, Path]) -> None:
    weights = load_lora_weights(adapter_dirs["qv"], dtype=torch.float32)
    assert weights.rank == 4
    assert set(weights.modules) == {
        f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")
    }
    _a, _b, scale = weights.modules["model.layers.0.self_attn.q_proj"]
    assert scale == pytest.approx(2.0)  # lora_alpha / r = 8 / 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"bias": "all"}, "biases"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"peft_type": "IA3"}, "IA3"),
    ],
)
def test_unsupported_adapters_are_refused(
    adapter_dirs: dict[str, Path], tmp_path: Path, change: dict[str, object], message: str
) -> None:
    target = tmp_path / "adapter"
    target.mkdir()
    config = json.loads((adapter_dirs["qv"] / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**config, **change}))
    (target / "adapter_model.safetensors").write_bytes(
        (adapter_dirs["qv"] / "adapter_model.safetensors").read_bytes()
    )
    with pytest.raises(AdapterFormatError, match=message):
        load_lora_weights(target, dtype=torch.float32)


def test_missing_adapter(tmp_path: Path) -> None:
    with pytest.raises(AdapterFormatError, match="No adapter found"):
        check_adapter(tmp_path / "nothing")
    with pytest.raises(AdapterFormatError, match="No adapter found"):
        load_lora_weights(tmp_path, dtype=torch.float32)
