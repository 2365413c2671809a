"""The production topology file is accepted by Docker Compose and wires the services as documented."""

from __future__ import annotations

import shutil
import subprocess

import yaml

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
