"""The vLLM rollout server of TRL's server mode: when the plan gives it a GPU, the command and environment it
runs with, and its life (ready once /health answers, stopped with the block, a failed start reported)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.trainer.conftest import RecordingSink, ScriptedControl
from tests.trainer.test_pipeline import rft_spec
from trainer.config import Hardware, parse_config, plan_run, rollout_server_gpu
from trainer.distributed import Launch
from trainer.interface import JobResult, JobSpec, TrainerError
from trainer.launch import LAUNCH_RESULT, write_result
from trainer.rl import vllm_kwargs
from trainer.rollout_server import (
    RolloutServer,
    choose_server,
    rollout_server,
    serve_command,
    serve_env,
    with_server,
)

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


# ---------------------------------------------------------------------------------------------------------------
# The launcher's choice and the server's place in a launch
# ---------------------------------------------------------------------------------------------------------------

VLLM = {"rl": {"max_steps": 4, "early_stop": False, "rollout_engine": "vllm"}}


def test_the_launcher_chooses_a_server_when_colocated_does_not_fit(
    tiny_model: Path, rft_files: tuple[Path, Path]
) -> None:
    spec = rft_spec(tiny_model, rft_files, **VLLM)
    small, big = 2**20, 80 * 2**30  # the tiny model's colocated share (0.3 of the GPU) fits only the big one
    choice = choose_server(spec, ["2", "5"], port=8123, device_bytes=small)
    assert choice is not None
    assert choice.server.gpu == "5" and choice.training_gpus == ("2",) and choice.server.port == 8123
    assert choice.server.model == str(tiny_model) and choice.colocated_bytes > small
    assert "takes GPU 5" in choice.describe() and "GPU 2 " in choice.describe()
    assert choose_server(spec, ["2", "5"], port=8123, device_bytes=big) is None
    assert choose_server(spec, ["2"], port=8123, device_bytes=small) is None  # one GPU: nothing to give
    # 4 GPUs leave 3 to train on, and the SFT batch of 4 does not split over 3: colocated (the ranks explain).
    assert choose_server(spec, ["0", "1", "2", "3"], port=8123, device_bytes=small) is None
    local = rft_spec(tiny_model, rft_files, rl={"rollout_engine": "transformers"})
    assert choose_server(local, ["2", "5"], port=8123, device_bytes=small) is None


def test_with_server_points_the_ranks_at_it(tiny_model: Path, rft_files: tuple[Path, Path]) -> None:
    spec = with_server(
        rft_spec(tiny_model, rft_files, **VLLM), RolloutServer(model="m", gpu="1", port=8123), group_port=5000
    )
    cfg = parse_config(spec.method, spec.hyperparameters, spec.openrft)
    assert cfg.openrft.rl.vllm_server_base_url == "http://127.0.0.1:8123"
    assert cfg.openrft.rl.vllm_group_port == 5000 and cfg.openrft.rl.max_steps == 4  # the rest kept
    plan = plan_run(cfg, n_train=10, hardware=Hardware(gpu=True, cpu_count=8), vllm_available=True)
    assert plan.vllm_mode == "server"
    kw = vllm_kwargs(
        mode=plan.vllm_mode,
        server_base_url=cfg.openrft.rl.vllm_server_base_url,
        gpu_memory_utilization=0.3,
        max_model_length=None,
        group_port=cfg.openrft.rl.vllm_group_port,
    )
    assert kw == {
        "use_vllm": True,
        "vllm_mode": "server",
        "vllm_server_base_url": "http://127.0.0.1:8123",
        "vllm_group_port": 5000,
    }


class FakeRanks:
    """Stands in for run_distributed: what the ranks would see (their launch, environment, spec, the server)."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def __call__(self, args: list[str], launch: Launch, *, env: dict[str, str], **_: object) -> int:
        rl = JobSpec.model_validate_json(Path(args[1]).read_text()).openrft["rl"]
        url = rl.get("vllm_server_base_url")
        self.seen = {"processes": launch.nproc, "visible": env["CUDA_VISIBLE_DEVICES"], "rl": rl}
        if url:
            self.seen["health"] = httpx.get(f"{url}/health", timeout=5).status_code
        write_result(Path(args[3]) / LAUNCH_RESULT, JobResult(status="succeeded"))
        return 0


def test_launch_job_runs_the_ranks_beside_the_server(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 2 GPUs where colocated vLLM does not fit: the server is up before the ranks start, on the GPU they do
    not see, they get its URL, and it is gone when they are done. Where it fits, the launch is left as it was."""
    from trainer import launch as launcher
    from trainer import rollout_server as rs

    fake = _fake_python(tmp_path)
    monkeypatch.setattr(
        launcher, "rollout_server", lambda server, *, log: rollout_server(server, log=log, python=fake)
    )
    ranks = FakeRanks()
    monkeypatch.setattr(launcher, "run_distributed", ranks)
    spec = rft_spec(tiny_model, rft_files, **VLLM)
    launch = Launch(processes=2, master_port=_port(), backend="nccl")
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}

    monkeypatch.setattr(rs, "gpu_memory_bytes", lambda device: 2**20)
    sink = RecordingSink()
    result = launcher.launch_job(spec, sink, ScriptedControl(), tmp_path / "w", launch, env=env)
    assert result.status == "succeeded"
    seen = ranks.seen
    assert seen["processes"] == 1 and seen["visible"] == "0" and seen["health"] == 200
    assert isinstance(seen["rl"]["vllm_group_port"], int)
    assert any("takes GPU 1" in m for m in sink.messages())
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{seen['rl']['vllm_server_base_url']}/health", timeout=2)

    monkeypatch.setattr(rs, "gpu_memory_bytes", lambda device: 80 * 2**30)
    launcher.launch_job(spec, RecordingSink(), ScriptedControl(), tmp_path / "w2", launch, env=env)
    assert ranks.seen == {"processes": 2, "visible": "0,1", "rl": VLLM["rl"]}
