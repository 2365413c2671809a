"""Which GPU each vLLM engine runs on, and how much of its memory it may take.

Every base model (and every merged fine-tune) is its own ``vllm serve`` process, and vLLM's
``--gpu-memory-utilization`` is a per-process share of the whole device: two engines at 0.85 on one GPU
cannot both start. The planner gives each engine a device from the serving devices and an equal share of
that device's budget (``memory_utilization / engines_per_gpu``); when every slot is taken the next engine
is refused with a message that says why and what to change, instead of a CUDA out-of-memory at start.

Device discovery is torch-free (the API must not initialize CUDA): ``CUDA_VISIBLE_DEVICES`` when set, else
``nvidia-smi -L``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from serving.errors import ServingError


class GpuCapacityError(ServingError):
    """No serving GPU has room for another engine (a configuration limit, not a transient state)."""

    status_code = 503
    type = "service_unavailable_error"
    default_code = "gpu_capacity_exhausted"


@dataclass(frozen=True)
class Placement:
    """Where one engine runs: the CUDA devices it sees and its share of their memory."""

    devices: tuple[str, ...]
    memory_utilization: float

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.devices)


def parse_devices(value: str) -> list[str]:
    """``"0,1"`` / ``"GPU-uuid,..."`` -> tokens; empty or ``-1`` means none (CUDA's own convention)."""
    tokens = [t.strip() for t in value.split(",") if t.strip()]
    return [] if tokens in ([], ["-1"]) else tokens


def visible_devices(environ: Mapping[str, str] | None = None) -> list[str]:
    """The CUDA devices this process may hand out, without touching CUDA.

    With ``CUDA_VISIBLE_DEVICES`` set, its tokens (children must get a subset of them, by value: a child's
    ``CUDA_VISIBLE_DEVICES`` is read against the physical devices, not against the parent's numbering).
    Otherwise the devices ``nvidia-smi -L`` lists, as indices; none without a driver.
    """
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_devices(env["CUDA_VISIBLE_DEVICES"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return [str(i) for i in range(count)]


@dataclass
class GpuPlanner:
    devices: list[str]
    """The devices engines may use, in order of preference."""
    memory_utilization: float = 0.85
    """The share of each device's memory that all engines on it take together."""
    engines_per_gpu: int = 1
    _used: dict[str, list[str]] = field(default_factory=dict)
    """device -> engines placed on it."""

    def __post_init__(self) -> None:
        if not 0 < self.memory_utilization <= 1:
            raise ValueError("memory_utilization must be in (0, 1]")
        if self.engines_per_gpu < 1:
            raise ValueError("engines_per_gpu must be >= 1")
        for device in self.devices:
            self._used.setdefault(device, [])

    @property
    def share(self) -> float:
        """Each engine's ``--gpu-memory-utilization``: an equal part of the device budget."""
        return round(self.memory_utilization / self.engines_per_gpu, 4)

    def placement_of(self, engine: str) -> Placement | None:
        for device, engines in self._used.items():
            if engine in engines:
                return Placement((device,), self.share)
        return None

    def place(self, engine: str) -> Placement:
        """A device for ``engine`` (the least used one); the same one again if it already has a place."""
        current = self.placement_of(engine)
        if current is not None:
            return current
        if not self.devices:
            raise GpuCapacityError(
                f"Cannot start a vLLM engine for '{engine}': no CUDA device is visible to the serving "
                "process. Give it a GPU (OPENRFT_SERVING_GPUS, or the container's device reservation) or "
                "set OPENRFT_SERVING_BACKEND=cpu."
            )
        device = min(self.devices, key=lambda d: len(self._used[d]))
        if len(self._used[device]) >= self.engines_per_gpu:
            running = "; ".join(f"GPU {d}: {', '.join(e) or '-'}" for d, e in self._used.items())
            raise GpuCapacityError(
                f"Cannot start an engine for '{engine}': every serving GPU already runs "
                f"{self.engines_per_gpu} engine{'s' * (self.engines_per_gpu != 1)} ({running}). Each base "
                "model and each merged fine-tuned model needs its own engine. Raise "
                "OPENRFT_SERVING_ENGINES_PER_GPU (each engine then gets "
                f"{self.memory_utilization:g}/N of the GPU's memory), add GPUs to OPENRFT_SERVING_GPUS, or "
                "offer fewer base models."
            )
        self._used[device].append(engine)
        return Placement((device,), self.share)

    def release(self, engine: str) -> None:
        for engines in self._used.values():
            if engine in engines:
                engines.remove(engine)

    def describe(self) -> dict[str, list[str]]:
        return {d: list(e) for d, e in self._used.items()}
