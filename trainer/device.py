"""The job's device and what follows from it: where the model lives, its precision, and micro-batches that fit.

On a GPU the base model is placed there at load (every generation before the first trainer — the estimate,
synthesis, the baseline evaluation — would otherwise run on the CPU), bf16 is used only where the GPU supports it
(fp16 mixed precision on T4 / V100), and a trainer's batch is split into micro-batches with gradient accumulation
when one batch's logits and activations would not fit (a 7B model's logits alone are ~20 GB for 64 sequences of
1024 tokens). On the CPU nothing changes: fp32, one micro-batch.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Literal

# The share of a GPU's memory one micro-batch's activations may take; the weights, the optimizer state of the
# adapters and the allocator's slack take the rest.
ACTIVATION_SHARE = 0.3


@dataclass(frozen=True)
class Device:
    kind: Literal["cpu", "cuda"]
    bf16: bool = False
    fp16: bool = False
    total_bytes: int | None = None

    @property
    def name(self) -> str:
        return "cuda" if self.kind == "cuda" else "cpu"

    def torch_dtype(self) -> Any:
        import torch

        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32


def detect() -> Device:
    import torch

    if not torch.cuda.is_available():
        return Device("cpu")
    bf16 = bool(torch.cuda.is_bf16_supported())
    total = int(torch.cuda.get_device_properties(0).total_memory)
    return Device("cuda", bf16=bf16, fp16=not bf16, total_bytes=total)


def gpu_memory_bytes(device: str) -> int | None:
    """Total memory of one GPU (a ``CUDA_VISIBLE_DEVICES`` entry: an index or a UUID) without initializing CUDA,
    which a launcher must not do (its ranks need the device to themselves); None without ``nvidia-smi``."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", device]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
        return int(float(out.stdout.split()[0]) * 2**20) if out.returncode == 0 else None  # MiB
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def bytes_per_sequence(tokens: int, config: Any) -> int:
    """Peak training memory of one sequence beyond the weights, with activation checkpointing: its logits in
    fp32 (twice: TRL's log-softmax keeps a copy) and one hidden state per layer in half precision."""
    vocab = int(getattr(config, "vocab_size", 32000) or 32000)
    hidden = int(getattr(config, "hidden_size", 4096) or 4096)
    layers = int(getattr(config, "num_hidden_layers", 32) or 32)
    return tokens * (2 * vocab * 4 + layers * hidden * 2 * 4)


def micro_batches(total: int, *, tokens: int, config: Any, device: Device) -> tuple[int, int]:
    """(micro-batch, accumulation steps) with micro x accumulation == total: the largest micro-batch that
    divides ``total`` and fits the device. CPU: the whole batch at once."""
    if device.kind != "cuda" or not device.total_bytes or total <= 1:
        return total, 1
    budget = device.total_bytes * ACTIVATION_SHARE
    per_seq = bytes_per_sequence(tokens, config)
    for micro in range(total, 0, -1):
        if total % micro == 0 and micro * per_seq <= budget:
            return micro, total // micro
    return 1, total
