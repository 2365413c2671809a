"""The vLLM rollout server of TRL's server mode: when the plan gives it a GPU, the command and environment it
runs with, and its life (ready once /health answers, stopped with the block, a failed start reported)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest

from trainer.config import Hardware, parse_config, plan_run, rollout_server_gpu
from trainer.interface import TrainerError
from trainer.rollout_server import RolloutServer, rollout_server, serve_command, serve_env

# Stands in for `python -m trl.cli vllm-serve ...`: answers /health on the --port it is given.
FAKE = """#!{python}
import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
if os.environ.get("FAKE_VLLM_FAILS"):
    print("CUDA out of memory", flush=True)
    sys.exit(3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _fake_python(tmp: Path) -> str:
    path = tmp / "python"
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_command_and_environment() -> None:
    server = RolloutServer(model="/models/base", gpu="3", port=8123, max_model_len=2048)
    cmd = serve_command(server, python="py")
    assert cmd[:4] == ["py", "-m", "trl.cli", "vllm-serve"]
    assert cmd[cmd.index("--model") + 1] == "/models/base" and cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--max-model-len") + 1] == "2048" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert serve_env(server, {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "X": "1"}) == {
        "CUDA_VISIBLE_DEVICES": "3",
        "X": "1",
    }
    assert server.base_url == "http://127.0.0.1:8123"


def test_the_plan_gives_the_server_a_gpu_only_when_it_pays() -> None:
    rft = parse_config("reinforcement", {}, {})
    tight = {"vllm_available": True, "colocate_fits": False}
    assert rollout_server_gpu(rft, 4, **tight)
    assert not rollout_server_gpu(rft, 4, vllm_available=True, colocate_fits=True)  # colocated is faster
    assert not rollout_server_gpu(rft, 1, **tight)  # one GPU: colocate
    assert not rollout_server_gpu(rft, 4, vllm_available=False, colocate_fits=False)  # transformers rollouts
    colocate = parse_config("reinforcement", {}, {"rl": {"vllm_mode": "colocate"}})
    assert not rollout_server_gpu(colocate, 4, **tight)
    given = parse_config("reinforcement", {}, {"rl": {"vllm_server_base_url": "http://rollouts:8000"}})
    assert not rollout_server_gpu(given, 4, **tight)  # the user runs one already
    assert not rollout_server_gpu(parse_config("supervised", {}, {}), 4, **tight)
    gpu = Hardware(gpu=True, cpu_count=8)
    # In the ranks: auto is a server once the launcher put its URL in the options, else colocate.
    assert plan_run(given, n_train=10, hardware=gpu, vllm_available=True).vllm_mode == "server"
    assert plan_run(rft, n_train=10, hardware=gpu, vllm_available=True).vllm_mode == "colocate"


def test_the_server_runs_for_the_block(tmp_path: Path) -> None:
    server = RolloutServer(model="m", gpu="1", port=_port())
    with rollout_server(
        server, log=tmp_path / "vllm.log", timeout_s=30, python=_fake_python(tmp_path)
    ) as url:
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_server_that_dies_fails_the_job_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_FAILS", "1")
    server = RolloutServer(model="m", gpu="1", port=_port())
    python = _fake_python(tmp_path)
    with pytest.raises(TrainerError) as err, rollout_server(server, log=tmp_path / "vllm.log", python=python):
        pass
    assert "exited with status 3" in err.value.message and "CUDA out of memory" in err.value.message
