"""How to launch an engine process for a base model: the embedded CPU server or vLLM.

Both speak the same protocol (OpenAI endpoints + vLLM's runtime LoRA endpoints), so the supervisor and the
proxy treat them alike; a backend only says which command to run. This module is torch-free: whether a GPU
is usable is asked of a short-lived child process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from serving.gpus import Placement

BackendSetting = Literal["auto", "cpu", "vllm"]
ENGINE_KEY_ENV = "OPENRFT_ENGINE_API_KEY"
"""The per-start secret an engine answers to (the supervisor sets it; vLLM gets the same in VLLM_API_KEY)."""
CPU = "cpu"
"""The backend every registry has: it needs no GPU, and ``cpu_models`` always run on it."""


@dataclass(frozen=True)
class EngineLaunch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    """Added to the parent's environment."""
    startup_timeout: float = 600.0


class EngineBackend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def uses_gpu(self) -> bool:
        """Whether each engine needs a GPU placement (then ``launch`` gets one)."""
        ...

    def launch(
        self,
        *,
        base_source: str,
        served_model_name: str,
        host: str,
        port: int,
        placement: Placement | None = None,
    ) -> EngineLaunch: ...


@dataclass(frozen=True)
class CpuBackend:
    """``python -m serving.cpu_server`` for one base model."""

    max_loras: int = 4
    max_lora_rank: int = 256
    """The CPU engine sizes its LoRA buffers to the largest rank loaded, so a high limit costs nothing."""
    max_batch_size: int = 16
    max_model_len: int | None = None
    dtype: str = "float32"
    threads: int = 0
    cache_dir: Path | None = None
    reasoning_parser: str = "think"
    python: str = sys.executable
    startup_timeout: float = 600.0
    name: str = "cpu"
    uses_gpu: bool = False

    def launch(
        self,
        *,
        base_source: str,
        served_model_name: str,
        host: str,
        port: int,
        placement: Placement | None = None,
    ) -> EngineLaunch:
        argv = [
            self.python,
            "-m",
            "serving.cpu_server",
            "--base-model-source",
            base_source,
            "--served-model-name",
            served_model_name,
            "--host",
            host,
            "--port",
            str(port),
            "--max-loras",
            str(self.max_loras),
            "--max-lora-rank",
            str(self.max_lora_rank),
            "--max-batch-size",
            str(self.max_batch_size),
            "--dtype",
            self.dtype,
            "--reasoning-parser",
            self.reasoning_parser,
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.max_model_len:
            argv += ["--max-model-len", str(self.max_model_len)]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        if self.cache_dir:
            argv += ["--cache-dir", str(self.cache_dir)]
        return EngineLaunch(argv, {"TOKENIZERS_PARALLELISM": "false"}, self.startup_timeout)


@lru_cache(maxsize=1)
def cuda_available(python: str = sys.executable) -> bool:
    """Whether torch in this environment sees a CUDA device (asked of a child: the API stays torch-free)."""
    try:
        out = subprocess.run(
            [python, "-c", "import torch; print(torch.cuda.is_available())"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip().endswith("True")


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(setting: str, available: Collection[str] = (CPU, "vllm")) -> str:
    """The name of the registered backend that ``setting`` picks: ``auto`` means vLLM when it is registered,
    installed and a CUDA device is visible, else the CPU engine."""
    if setting == "auto":
        return "vllm" if "vllm" in available and vllm_importable() and cuda_available() else CPU
    if setting not in available:
        raise ValueError(f"serving backend must be auto, {' or '.join(available)}, not {setting!r}")
    return setting
