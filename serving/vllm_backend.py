"""vLLM as the engine of a base model on GPU: the ``vllm serve`` command line and its launcher.

The service starts one ``vllm serve`` per base model with LoRA enabled and runtime adapter updates allowed
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), then loads each fine-tuned adapter with ``POST /v1/load_lora_adapter``
on first use (see :mod:`serving.supervisor`). vLLM is imported nowhere in this module: it runs as its own
process, and in the GPU image only.

``gguf:<package>/<file>`` sources are converted once to a safetensors directory (the trainer's loader and
cache) by ``python -m serving.vllm_backend``, which then replaces itself with ``vllm serve``.

vLLM runs as ``<python> -m vllm.entrypoints.cli.main serve`` (the module behind the ``vllm`` script) with
the service's own interpreter: no PATH lookup, so an unactivated virtual environment works. Each engine gets
its GPU and memory share from :mod:`serving.gpus` (``CUDA_VISIBLE_DEVICES`` and
``--gpu-memory-utilization``).

Supported versions: vLLM 0.30 (TRL 1.16 accepts 0.22-0.31 for colocated rollouts, and 0.30 is the one of
those that installs with transformers 5.24 and torch 2.13; see the ``gpu`` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from serving.backends import EngineLaunch
from serving.gpus import Placement

# ``vllm`` is a console script for this module; running the module keeps us on the service's interpreter.
VLLM_CLI_MODULE = "vllm.entrypoints.cli.main"

# vLLM accepts only these values for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that is >= ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


@dataclass(frozen=True)
class VllmBackend:
    max_loras: int = 4
    """Adapters in one batch (GPU slots)."""
    max_cpu_loras: int | None = None
    """Adapters cached in host memory (LRU); vLLM defaults it to max_loras."""
    max_lora_rank: int = 256
    """Training allows ranks up to 256; vLLM reserves LoRA buffers for this rank inside the engine's memory
    share (less KV cache), so lower it when every job trains small ranks."""
    gpu_memory_utilization: float = 0.85
    """Used when no placement is given; with one, the planner's share wins."""
    max_model_len: int | None = None
    dtype: str = "auto"
    reasoning_parser: str | None = None
    """A vLLM reasoning parser name (e.g. 'deepseek_r1'). None: the proxy splits ``<think>`` text itself,
    exactly as the CPU engine does (vLLM's parsers need the tags to be single tokens, which many models,
    SmolLM2 included, do not have)."""
    cache_dir: Path | None = None
    executable: str | None = None
    """A ``vllm`` executable to run instead of ``python -m vllm.entrypoints.cli.main``."""
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    startup_timeout: float = 1800.0
    name: str = "vllm"
    uses_gpu: bool = True

    @property
    def proxy_splits_reasoning(self) -> bool:
        return self.reasoning_parser is None

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_loras < 1:
            raise ValueError("max_loras must be >= 1")

    def serve_args(
        self,
        *,
        model: str,
        served_model_name: str,
        host: str,
        port: int,
        memory_utilization: float | None = None,
    ) -> list[str]:
        """Arguments after ``vllm serve`` (the model is positional)."""
        args = [
            model,
            "--host",
            host,
            "--port",
            str(port),
            "--served-model-name",
            served_model_name,
            "--enable-lora",
            "--max-loras",
            str(self.max_loras),
            "--max-lora-rank",
            str(vllm_lora_rank(self.max_lora_rank)),
            "--gpu-memory-utilization",
            str(memory_utilization or self.gpu_memory_utilization),
            "--dtype",
            self.dtype,
        ]
        if self.max_cpu_loras:
            args += ["--max-cpu-loras", str(max(self.max_cpu_loras, self.max_loras))]
        if self.max_model_len:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.reasoning_parser:
            args += ["--reasoning-parser", self.reasoning_parser]
        return args + list(self.extra_args)

    def cli(self) -> list[str]:
        """How to run vLLM's command line: the configured executable, else this interpreter's module."""
        return [self.executable] if self.executable else [self.python, "-m", VLLM_CLI_MODULE]

    def build_command(
        self,
        *,
        model: str,
        served_model_name: str,
        host: str,
        port: int,
        memory_utilization: float | None = None,
    ) -> list[str]:
        return [
            *self.cli(),
            "serve",
            *self.serve_args(
                model=model,
                served_model_name=served_model_name,
                host=host,
                port=port,
                memory_utilization=memory_utilization,
            ),
        ]

    def launch(
        self,
        *,
        base_source: str,
        served_model_name: str,
        host: str,
        port: int,
        placement: Placement | None = None,
    ) -> EngineLaunch:
        env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", **self.env}
        share = None
        if placement is not None:
            env["CUDA_VISIBLE_DEVICES"] = placement.cuda_visible_devices
            share = placement.memory_utilization
        if base_source.startswith("gguf:"):
            # Convert in the child (needs torch/transformers, which the API process must not import).
            argv = [self.python, "-m", "serving.vllm_backend", "--base-model-source", base_source]
            if self.cache_dir:
                argv += ["--cache-dir", str(self.cache_dir)]
            if self.executable:
                argv += ["--executable", self.executable]
            argv += ["--"]
            argv += self.serve_args(
                model="{model}",
                served_model_name=served_model_name,
                host=host,
                port=port,
                memory_utilization=share,
            )
            return EngineLaunch(argv, env, self.startup_timeout)
        argv = self.build_command(
            model=base_source,
            served_model_name=served_model_name,
            host=host,
            port=port,
            memory_utilization=share,
        )
        return EngineLaunch(argv, env, self.startup_timeout)


def main(argv: list[str] | None = None) -> None:
    """Resolve a ``gguf:`` source to a safetensors directory, then exec ``vllm serve``."""
    p = argparse.ArgumentParser(prog="python -m serving.vllm_backend")
    p.add_argument("--base-model-source", required=True)
    p.add_argument("--cache-dir", default=None)
    p.add_argument(
        "--executable", default=None, help="a vllm executable (default: this interpreter's module)"
    )
    p.add_argument("serve_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    from trainer.models import resolve_model_dir

    model_dir = resolve_model_dir(
        args.base_model_source, cache_dir=Path(args.cache_dir) if args.cache_dir else None
    )
    rest = [a for a in args.serve_args if a != "--"]
    rest = [model_dir if a == "{model}" else a for a in rest]
    if args.executable:
        exe = shutil.which(args.executable) or args.executable
        os.execv(exe, [exe, "serve", *rest])
    os.execv(sys.executable, [sys.executable, "-m", VLLM_CLI_MODULE, "serve", *rest])


if __name__ == "__main__":
    main()
