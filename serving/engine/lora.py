"""Heterogeneous multi-LoRA for one base model (the Punica / S-LoRA / LoRAX idea, in plain torch).

Every target ``nn.Linear`` of the base model is wrapped once by :class:`MultiLoraLinear`. The wrapper keeps,
per adapter *slot*, stacked low-rank factors ``A[slot]: (r_max, in)`` and ``B[slot]: (out, r_max)`` (``B`` is
pre-multiplied by the adapter's scale). A batch carries one slot id per row (0 = no adapter), so one forward
pass computes the base projection for the whole batch and adds each row's own delta
``(x @ A_i^T) @ B_i^T``: rows of different adapters share the batch instead of being run adapter by adapter.
Adapters of a smaller rank are zero-padded to ``r_max``, which leaves the product unchanged.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

_PEFT_PREFIX = "base_model.model."
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterFormatError(ValueError):
    """The directory is not a LoRA adapter this engine can serve (the message says why)."""


class LoraBatch:
    """Which adapter slot each row of the current forward pass uses; shared by all wrapped modules."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None
        self.slots: torch.Tensor | None = None
        self.all_rows = False

    def set(self, slot_ids: list[int]) -> None:
        active = [(row, slot) for row, slot in enumerate(slot_ids) if slot != 0]
        if not active:
            self.rows = self.slots = None
            self.all_rows = False
            return
        self.rows = torch.tensor([row for row, _ in active], dtype=torch.long)
        self.slots = torch.tensor([slot for _, slot in active], dtype=torch.long)
        self.all_rows = len(active) == len(slot_ids)

    def clear(self) -> None:
        self.set([])


class MultiLoraLinear(nn.Module):
    """A base ``nn.Linear`` plus per-row LoRA deltas selected by :class:`LoraBatch`."""

    def __init__(self, base: nn.Linear, batch: LoraBatch, num_slots: int, max_rank: int) -> None:
        super().__init__()
        self.base = base
        self.batch = batch
        self.num_slots = num_slots
        self.max_rank = max_rank
        # Allocated on the first adapter that targets this module (most modules of a model may never need
        # one) and only as wide as the largest rank loaded so far: the batched matmuls cost rank x width, so a
        # generous ``max_rank`` limit does not slow down the usual rank-8 adapters.
        self.lora_a: torch.Tensor | None = None
        self.lora_b: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def width(self) -> int:
        """The rank the stacks are allocated for now (0 before the first adapter)."""
        return 0 if self.lora_a is None else int(self.lora_a.shape[1])

    def _ensure_stacks(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lora_a is None or self.lora_b is None or rank > self.width:
            weight = self.base.weight
            width = min(self.max_rank, max(rank, 2 * self.width))
            lora_a = torch.zeros(
                self.num_slots, width, self.in_features, dtype=weight.dtype, device=weight.device
            )
            lora_b = torch.zeros(
                self.num_slots, self.out_features, width, dtype=weight.dtype, device=weight.device
            )
            if self.lora_a is not None and self.lora_b is not None:
                # Zero-padded rank rows/columns add nothing: resident adapters keep their exact output.
                lora_a[:, : self.width].copy_(self.lora_a)
                lora_b[:, :, : self.width].copy_(self.lora_b)
            self.lora_a, self.lora_b = lora_a, lora_b
        return self.lora_a, self.lora_b

    def write_slot(self, slot: int, a: torch.Tensor | None, b: torch.Tensor | None, scale: float) -> None:
        """Put an adapter's factors into ``slot`` (or zeros when it does not target this module)."""
        if a is None or b is None:
            if self.lora_a is not None and self.lora_b is not None:
                self.lora_a[slot].zero_()
                self.lora_b[slot].zero_()
            return
        rank = a.shape[0]
        if a.shape[1] != self.in_features or b.shape[0] != self.out_features or b.shape[1] != rank:
            raise AdapterFormatError(
                f"LoRA factors of shape {tuple(a.shape)} / {tuple(b.shape)} do not fit a "
                f"{self.in_features}->{self.out_features} projection"
            )
        if rank > self.max_rank:
            raise AdapterFormatError(f"LoRA rank {rank} is greater than max_lora_rank {self.max_rank}")
        lora_a, lora_b = self._ensure_stacks(rank)
        lora_a[slot].zero_()
        lora_b[slot].zero_()
        lora_a[slot, :rank].copy_(a)
        lora_b[slot, :, :rank].copy_(b * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        rows, slots = self.batch.rows, self.batch.slots
        if rows is None or slots is None or self.lora_a is None or self.lora_b is None:
            return y
        a = self.lora_a[slots]  # (k, r, in)
        b = self.lora_b[slots]  # (k, out, r)
        if self.batch.all_rows:
            return y + torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2))
        delta = torch.bmm(torch.bmm(x[rows], a.transpose(1, 2)), b.transpose(1, 2))
        return y.index_add(0, rows, delta)


def wrap_linear_modules(
    model: nn.Module, target_names: set[str], batch: LoraBatch, num_slots: int, max_rank: int
) -> dict[str, MultiLoraLinear]:
    """Replace every ``nn.Linear`` whose last name component is in ``target_names`` by a wrapper.

    Returns the wrappers by their module path (the path PEFT uses in adapter files, minus its prefix).
    """
    wrapped: dict[str, MultiLoraLinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in target_names:
                path = f"{name}.{child_name}" if name else child_name
                wrapper = MultiLoraLinear(child, batch, num_slots, max_rank)
                setattr(module, child_name, wrapper)
                wrapped[path] = wrapper
    return wrapped


@dataclass
class LoraWeights:
    """One adapter read from disk: per module path, ``(A, B, scale)``."""

    path: Path
    rank: int
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    @property
    def num_parameters(self) -> int:
        return sum(a.numel() + b.numel() for a, b, _ in self.modules.values())


def _read_config(adapter_dir: Path) -> dict[str, object]:
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterFormatError(f"No adapter found at {adapter_dir} (missing adapter_config.json)")
    config: dict[str, object] = json.loads(config_file.read_text())
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterFormatError(f"Adapter type {peft_type} is not supported; only LoRA adapters are")
    if config.get("use_dora"):
        raise AdapterFormatError("DoRA adapters are not supported; train with use_dora=False")
    if config.get("bias", "none") != "none":
        raise AdapterFormatError(
            "LoRA adapters with trained biases are not supported; train with bias='none'"
        )
    if config.get("modules_to_save"):
        raise AdapterFormatError(
            "Adapters with modules_to_save (fully trained modules) are not supported; merge them instead"
        )
    return config


def _read_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    for filename in _WEIGHT_FILES:
        file = adapter_dir / filename
        if not file.is_file():
            continue
        if filename.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        loaded: dict[str, torch.Tensor] = torch.load(file, map_location="cpu", weights_only=True)
        return loaded
    raise AdapterFormatError(
        f"No adapter weights in {adapter_dir} (expected one of {', '.join(_WEIGHT_FILES)})"
    )


def _pattern_value(patterns: dict[str, float], module_path: str, default: float) -> float:
    # PEFT matches rank/alpha patterns against the end of the module path.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_path):
            return float(value)
    return default


def load_lora_weights(adapter_dir: str | Path, *, dtype: torch.dtype) -> LoraWeights:
    """Read a PEFT LoRA adapter directory into ``LoraWeights`` (CPU tensors of ``dtype``)."""
    adapter_dir = Path(adapter_dir)
    config = _read_config(adapter_dir)
    tensors = _read_tensors(adapter_dir)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight", key)
        if match is None:
            if "lora_embedding" in key or "lora_magnitude" in key:
                raise AdapterFormatError(f"Unsupported LoRA weight {key!r} (embedding LoRA or DoRA)")
            continue
        pairs.setdefault(match.group(1), {})[match.group(2)] = tensor
    if not pairs:
        raise AdapterFormatError(f"No LoRA weights found in {adapter_dir}")
    alpha = float(config.get("lora_alpha", config.get("r", 8)))  # type: ignore[arg-type]
    alpha_pattern = dict(config.get("alpha_pattern") or {})  # type: ignore[call-overload]
    use_rslora = bool(config.get("use_rslora", False))
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    max_rank = 0
    for module_path, pair in pairs.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise AdapterFormatError(f"Module {module_path} has only {sorted(pair)} of lora_A / lora_B")
        a, b = pair["lora_A"].to(dtype), pair["lora_B"].to(dtype)
        rank = a.shape[0]
        module_alpha = _pattern_value(alpha_pattern, module_path, alpha)
        scale = module_alpha / math.sqrt(rank) if use_rslora else module_alpha / rank
        modules[module_path.removeprefix(_PEFT_PREFIX)] = (a, b, scale)
        max_rank = max(max_rank, rank)
    return LoraWeights(path=adapter_dir, rank=max_rank, modules=modules)


def check_adapter(adapter_dir: str | Path) -> None:
    """Cheap validation (config and file presence) without reading the weights."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterFormatError(f"No adapter found at {adapter_dir}")
    _read_config(adapter_dir)
    if not any((adapter_dir / f).is_file() for f in _WEIGHT_FILES):
        raise AdapterFormatError(f"No adapter weights in {adapter_dir}")
