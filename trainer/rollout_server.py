"""A ``trl vllm-serve`` rollout server on a GPU of its own, for a job whose launcher chose TRL's vLLM server mode
(``trainer.config.rollout_server_gpu``: when colocated vLLM does not fit): the training ranks take the other GPUs, send prompts to the server and
push their updated weights to it after every optimizer step (TRL's NCCL weight sync), so generation never waits
for a colocated engine to wake up and the policy's GPUs keep their memory for training.

:func:`choose_server` makes the decision on the launcher, before any rank starts: the plan the ranks will
resolve, the longest prompt and trainer.memory's estimate of the colocated layout against one GPU's memory (read
with ``nvidia-smi``: the launcher must not initialize CUDA). The launcher (``trainer.launch.launch_job``) then
starts the server (:func:`rollout_server`), gives the ranks its URL and a free weight-sync port in the job's
options (:func:`with_server`) and stops it when the ranks are done; it lives in its own process group, so it
goes with the job, never outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx

from trainer.device import Device, gpu_memory_bytes
from trainer.interface import JobSpec, TrainerError


@dataclass(frozen=True)
class RolloutServer:
    model: str
    """The base model's local directory (converted from GGUF where needed): what the ranks train on."""
    gpu: str
    """The device it runs on (a CUDA_VISIBLE_DEVICES entry), not one of the training ranks'."""
    port: int
    host: str = "127.0.0.1"
    gpu_memory_utilization: float = 0.9
    """The whole device is the server's: most of it for the KV cache."""
    max_model_len: int | None = None
    dtype: str = "auto"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerChoice:
    """Why the job's last GPU became a rollout server: the colocated layout's need against one GPU's memory."""

    server: RolloutServer
    colocated_bytes: int
    device_bytes: int
    training_gpus: tuple[str, ...]

    def describe(self) -> str:
        gib = 2**30
        return (
            f"Rollouts: colocated vLLM would need about {self.colocated_bytes / gib:.1f} GiB on each GPU, which has "
            f"{self.device_bytes / gib:.1f} GiB, so a trl vllm-serve server takes GPU {self.server.gpu} and "
            f"training runs on GPU{'s' * (len(self.training_gpus) > 1)} {','.join(self.training_gpus)} "
            "(openrft.rl.vllm_mode 'colocate' or 'server' chooses for yourself)."
        )


def choose_server(
    spec: JobSpec,
    gpus: Sequence[str],
    *,
    port: int,
    device_bytes: int | None = None,
    vllm_available: bool | None = None,
) -> ServerChoice | None:
    """The rollout server a single-node launch on ``gpus`` should start, or None (colocated or transformers
    rollouts, or a job the ranks will refuse and explain themselves). ``device_bytes``: one GPU's memory
    (default: ``nvidia-smi``'s for the first); ``port``: the server's."""
    from trainer.config import ConfigError, Hardware, parse_config, plan_run, rollout_server_gpu

    if vllm_available is None:
        vllm_available = find_spec("vllm") is not None
    try:
        cfg = parse_config(spec.method, spec.hyperparameters, spec.openrft)
    except ConfigError:
        return None
    if not rollout_server_gpu(cfg, len(gpus), vllm_available=vllm_available, colocate_fits=False):
        return None  # whatever the memory: the cheap checks first, nothing loaded
    device_bytes = device_bytes or gpu_memory_bytes(gpus[0])
    if not device_bytes:
        return None
    from transformers import AutoConfig

    from trainer.data import load_rows
    from trainer.memory import estimate_job
    from trainer.models import load_tokenizer, prm_config, resolve_model_dir
    from trainer.prompts import longest_prompt_tokens

    opts = cfg.openrft
    model_dir = resolve_model_dir(
        spec.model_source, cache_dir=spec.cache_dir
    )  # the ranks then read the cache
    rows = load_rows(spec.training_file, method=spec.method, param="training_file")
    plan = plan_run(
        cfg,
        n_train=len(rows),
        hardware=Hardware(gpu=True, cpu_count=os.cpu_count() or 1),
        vllm_available=vllm_available,
    )
    need = estimate_job(
        AutoConfig.from_pretrained(model_dir),
        plan,
        opts,
        world_size=len(gpus),
        device=Device("cuda", bf16=True, total_bytes=device_bytes),
        prompt_tokens=longest_prompt_tokens(
            load_tokenizer(model_dir), rows, system_prompt=opts.system_prompt
        ),
        prm_config=prm_config(opts, cache_dir=spec.cache_dir),
    ).per_device
    if not rollout_server_gpu(
        cfg, len(gpus), vllm_available=vllm_available, colocate_fits=need <= device_bytes
    ):
        return None
    training = tuple(gpus[:-1])
    batches = [plan.rl_batch_size] + ([plan.sft_batch_size] if plan.sft_enabled else [])
    if any(b % len(training) for b in batches):
        return None  # the global batches must split over the training ranks: colocated, and the ranks explain
    server = RolloutServer(model=model_dir, gpu=gpus[-1], port=port)
    return ServerChoice(server, colocated_bytes=need, device_bytes=device_bytes, training_gpus=training)


def with_server(spec: JobSpec, server: RolloutServer, *, group_port: int) -> JobSpec:
    """``spec`` with the ranks pointed at ``server`` (``vllm_mode`` auto becomes server mode in the plan)."""
    opts = dict(spec.openrft)
    rl = dict(opts.get("rl") or {})
    rl.update(vllm_server_base_url=server.base_url, vllm_group_port=group_port)
    opts["rl"] = rl
    return spec.model_copy(update={"openrft": opts})


def serve_command(server: RolloutServer, *, python: str = sys.executable) -> list[str]:
    cmd = [
        python,
        "-m",
        "trl.cli",
        "vllm-serve",
        "--model",
        server.model,
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--gpu-memory-utilization",
        f"{server.gpu_memory_utilization:g}",
        "--dtype",
        server.dtype,
    ]
    if server.max_model_len:
        cmd += ["--max-model-len", str(server.max_model_len)]
    return cmd


def serve_env(server: RolloutServer, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["CUDA_VISIBLE_DEVICES"] = server.gpu
    return env


def wait_ready(
    proc: subprocess.Popen[bytes], base_url: str, *, timeout_s: float, log: Path | None = None
) -> None:
    """Until ``GET /health`` answers 200; a server that exits or stays silent fails the job with its log's end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrainerError(
                f"The vLLM rollout server exited with status {proc.returncode} before it was ready{_tail(log)}",
                code="training_error",
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise TrainerError(
        f"The vLLM rollout server was not ready after {timeout_s:.0f} s{_tail(log)}", code="training_error"
    )


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return "."
    lines = log.read_text(errors="replace").splitlines()[-5:]
    return ": " + " | ".join(lines) if lines else "."


@contextlib.contextmanager
def rollout_server(
    server: RolloutServer, *, log: Path, timeout_s: float = 600.0, python: str = sys.executable
) -> Iterator[str]:
    """Run the server for the duration of the block; yields its base URL once it answers."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            serve_command(server, python=python),
            env=serve_env(server),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopping it stops vLLM's workers too
        )
    try:
        wait_ready(proc, server.base_url, timeout_s=timeout_s, log=log)
        yield server.base_url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
