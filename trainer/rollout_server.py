"""A ``trl vllm-serve`` rollout server on a GPU of its own, for a job whose launcher chose TRL's vLLM server mode
(``trainer.config.rollout_server_gpu``: when colocated vLLM does not fit): the training ranks take the other GPUs, send prompts to the server and
push their updated weights to it after every optimizer step (TRL's NCCL weight sync), so generation never waits
for a colocated engine to wake up and the policy's GPUs keep their memory for training.

The launcher starts it before the ranks (:func:`rollout_server`), gives them its URL in the job's options
(``openrft.rl.vllm_server_base_url``) and stops it when the ranks are done; it lives in its own process group,
so it goes with the job, never outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from trainer.interface import TrainerError


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
