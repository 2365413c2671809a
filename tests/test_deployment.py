"""The production topology file is accepted by Docker Compose and wires the services as documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from importlib.metadata import requires
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support import REPO


def _compose() -> list[str]:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    exe = shutil.which("docker-compose")
    assert exe, "neither 'docker compose' nor 'docker-compose' is installed (scripts/setup.sh installs it)"
    return [exe]


def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        [*_compose(), "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_topology():
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"api", "worker-default", "worker-gpu", "postgres", "redis", "flower", "migrate"} <= set(services)
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "gpu" in services["worker-gpu"]["command"] and "default" in services["worker-default"]["command"]


def resolved(**env: str) -> dict[str, Any]:
    """The file as Compose reads it (merge keys and ${VARS} applied)."""
    result = subprocess.run(
        [*_compose(), "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def gpu_ids(service: dict[str, Any]) -> list[str]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [str(i) for d in devices if d.get("driver") == "nvidia" for i in d.get("device_ids", [])]


def is_gpu_image(service: dict[str, Any]) -> bool:
    return service["image"] == "openrft:gpu" and service["build"]["args"]["PROFILE"] == "gpu"


def test_serving_has_a_gpu_home():
    """Serving lives in the API process: it needs the GPU image (vLLM), a GPU and the vLLM backend; the
    old file set the backend on the training worker, which never serves."""
    services = resolved()
    api = services["api"]
    assert is_gpu_image(api) and gpu_ids(api) == ["0"]
    assert api["environment"]["OPENRFT_SERVING_BACKEND"] == "vllm"
    for name, service in services.items():
        if name != "api":
            assert "OPENRFT_SERVING_BACKEND" not in service.get("environment", {}), name
    assert not any(gpu_ids(s) for n, s in services.items() if n not in ("api", "worker-gpu"))


def test_training_and_serving_get_different_gpus_unless_told_otherwise():
    services = resolved()
    worker = services["worker-gpu"]
    assert is_gpu_image(worker) and gpu_ids(worker) == ["1"] != gpu_ids(services["api"])
    command = worker["command"]
    # One training job per reserved GPU, each pool child pinned to its own (workers.devices).
    assert int(command[command.index("--concurrency") + 1]) == len(gpu_ids(worker))
    assert command[command.index("--gpus") + 1] == "auto"
    shared = resolved(
        OPENRFT_SERVING_DEVICE="0", OPENRFT_TRAINING_DEVICE="0", OPENRFT_SERVING_GPU_MEMORY_UTILIZATION="0.35"
    )
    assert gpu_ids(shared["api"]) == gpu_ids(shared["worker-gpu"]) == ["0"]
    assert shared["api"]["environment"]["OPENRFT_SERVING_GPU_MEMORY_UTILIZATION"] == "0.35"


def test_engines_can_read_the_adapters_the_worker_writes():
    """The API's engines load adapter paths the training worker registered: same volume, same place."""
    services = resolved()
    mounts: dict[str, list[str]] = {}
    for name in ("api", "worker-gpu"):
        service = services[name]
        home = service["environment"]["OPENRFT_HOME"]
        volumes = [
            (v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
            for v in service["volumes"]
        ]
        mounts[name] = [source for source, target in volumes if target == home]
    assert mounts["api"] and mounts["api"] == mounts["worker-gpu"]


def test_gpu_image_installs_the_gpu_extra_and_a_compiler():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'pip install "\.\[server,train,gpu\]"', dockerfile)
    assert re.search(r'PROFILE" = "gpu" \]; then apt-get install [^\n]*gcc', dockerfile)


def test_vllm_pin_is_one_trl_supports_and_the_server_extra_allows():
    """Item 5: the gpu extra asked for vLLM >= 0.33 while TRL 1.16 supports 0.22-0.31 (trl[vllm])."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    gpu = {Requirement(r).name: Requirement(r) for r in extras["gpu"]}
    assert set(gpu) == {"vllm", "deepspeed"}  # deepspeed: openrft.distributed.strategy deepspeed_zero2/3
    vllm = gpu["vllm"]
    assert vllm.name == "vllm" and len(vllm.specifier) == 1 and next(iter(vllm.specifier)).operator == "=="
    pinned = Version(next(iter(vllm.specifier)).version)
    trl_vllm = [
        Requirement(r) for r in requires("trl") or [] if r.startswith("vllm") and 'extra == "vllm"' in r
    ]
    assert trl_vllm and all(pinned in r.specifier for r in trl_vllm)
    # vLLM 0.30 itself requires fastapi<0.137 and transformers>=5.10.4 (its package metadata): the server
    # and train extras must leave room for both in the one environment of the GPU image.
    server = {Requirement(r).name: Requirement(r) for r in extras["server"]}
    assert Version("0.136.3") in server["fastapi"].specifier
    train = {Requirement(r).name: Requirement(r) for r in extras["train"]}
    assert (
        Version("2.13.0") in train["torch"].specifier and Version("5.24.0") in train["transformers"].specifier
    )
