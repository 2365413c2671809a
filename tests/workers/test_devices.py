"""Device assignment of training workers: equal, disjoint groups of GPUs per pool child (one job's processes
use its group, one per GPU), set from the worker's list before CUDA starts, and a concurrency the GPUs
cannot hold refused at start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import REPO
from workers import devices
from workers.devices import DeviceConfigError, DevicePlan, assign_child, job_placement, plan_devices


def fake_nvidia_smi(tmp_path: Path, count: int) -> dict[str, str]:
    """A PATH whose nvidia-smi lists ``count`` GPUs, like the real ``nvidia-smi -L``."""
    exe = tmp_path / "nvidia-smi"
    lines = "\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:04d})" for i in range(count))
    exe.write_text(f"#!/bin/sh\ncat <<'END'\n{lines}\nEND\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{tmp_path}:{os.environ['PATH']}"}


def test_each_slot_gets_its_own_device() -> None:
    plan = plan_devices("4,6", concurrency=2)
    assert plan.groups == (("4",), ("6",))
    env: dict[str, str] = {}
    assert assign_child(plan, 0, env) == "4" and env == {"CUDA_VISIBLE_DEVICES": "4"}
    assert assign_child(plan, 1, env) == "6" and env == {"CUDA_VISIBLE_DEVICES": "6"}


def test_auto_uses_the_parents_visible_devices_by_value() -> None:
    # A child's CUDA_VISIBLE_DEVICES is read against the physical devices: pass the parent's values on.
    plan = plan_devices("auto", concurrency=2, environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert plan.groups == (("2",), ("3",))
    assert plan_devices(None, 1, environ={"CUDA_VISIBLE_DEVICES": ""}).groups == ()


def test_auto_counts_gpus_with_nvidia_smi_without_touching_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, 4)["PATH"])
    assert plan_devices("auto", concurrency=4).groups == (("0",), ("1",), ("2",), ("3",))
    # Fewer slots than GPUs: each slot's job runs one process per GPU of its group.
    assert plan_devices("auto", concurrency=1).groups == (("0", "1", "2", "3"),)


def test_slots_get_equal_disjoint_groups(caplog: pytest.LogCaptureFixture) -> None:
    plan = plan_devices("0,1,2,3", concurrency=2)
    assert plan.groups == (("0", "1"), ("2", "3"))
    env: dict[str, str] = {}
    assert assign_child(plan, 1, env) == "2,3" and env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert plan.describe() == "slot 0: GPUs 0,1, slot 1: GPUs 2,3"
    # Uneven: equal groups (a job's global batch is split over its processes), the remainder idle, said.
    with caplog.at_level("WARNING", logger="openrft.worker.devices"):
        assert plan_devices("GPU-a,GPU-b,GPU-c", concurrency=2).groups == (("GPU-a",), ("GPU-b",))
    assert "GPUs GPU-c stay idle" in caplog.text


def test_a_job_runs_one_process_per_gpu_of_its_slot() -> None:
    four = {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert job_placement(1, four) == (4, ["4", "5", "6", "7"])
    assert job_placement(2, four) == (2, ["4", "5"])  # the job asks for fewer: the first ones
    assert job_placement(8, four) == (4, ["4", "5", "6", "7"])  # more than the slot has: all of them
    assert job_placement(1, {"CUDA_VISIBLE_DEVICES": "3"}) == (1, ["3"])
    # The CPU: the job's own number (gloo).
    cpu = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/nonexistent"}
    assert job_placement(1, cpu) == (1, []) and job_placement(3, cpu) == (3, [])


def test_no_gpu_means_no_assignment() -> None:
    plan = plan_devices("auto", concurrency=3, environ={"PATH": "/nonexistent"})
    assert plan.groups == () and plan.for_child(2) is None
    assert plan_devices("none", concurrency=2, environ={"CUDA_VISIBLE_DEVICES": "0,1"}).groups == ()


def test_concurrency_the_gpus_cannot_hold_is_refused() -> None:
    with pytest.raises(DeviceConfigError, match="--concurrency 3 needs 3 GPUs"):
        plan_devices("0,1", concurrency=3)
    with pytest.raises(DeviceConfigError, match="twice"):
        plan_devices("0,0", concurrency=1)
    with pytest.raises(DeviceConfigError, match="names no device"):
        plan_devices(",", concurrency=1)


def test_celery_hooks_plan_once_and_assign_per_child(monkeypatch: pytest.MonkeyPatch) -> None:
    def worker(queues: list[str], pool: str, concurrency: int) -> SimpleNamespace:
        consume = SimpleNamespace(consume_from={q: object() for q in queues})
        return SimpleNamespace(
            app=SimpleNamespace(amqp=SimpleNamespace(queues=consume)), pool_cls=pool, concurrency=concurrency
        )

    monkeypatch.setattr(devices, "_plan", None)
    env = {"OPENRFT_WORKER_GPUS": "1,0"}
    # The light worker (solo pool, default queue) is left alone.
    assert devices.on_worker_init(worker(["default"], "solo", 4), env) is None
    plan = devices.on_worker_init(worker(["gpu"], "prefork", 2), env)
    assert plan == DevicePlan((("1",), ("0",)), 2)
    child_env: dict[str, str] = {}
    assert devices.on_child_init(1, child_env) == "0" and child_env["CUDA_VISIBLE_DEVICES"] == "0"
    with pytest.raises(DeviceConfigError):
        devices.on_worker_init(worker(["gpu"], "prefork", 3), env)


def test_a_real_prefork_child_sees_only_its_device(tmp_path: Path) -> None:
    """Through billiard's pool, as Celery forks it: each child's CUDA_VISIBLE_DEVICES follows its index."""
    script = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
from billiard import Pool
from workers import devices
devices._plan = devices.plan_devices("5,7", concurrency=2)
def init():
    devices.on_child_init()
def seen(_):
    import time
    time.sleep(0.2)
    return os.environ.get("CUDA_VISIBLE_DEVICES")
with Pool(2, initializer=init) as pool:
    print(sorted(set(pool.map(seen, range(8)))))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['5', '7']"


def test_worker_command_takes_gpus() -> None:
    from openrft.cli import build_parser

    args = build_parser().parse_args(["worker", "--queues", "gpu", "--concurrency", "2", "--gpus", "0,1"])
    assert args.gpus == "0,1" and args.concurrency == 2
    assert build_parser().parse_args(["worker"]).gpus is None


def test_a_celery_worker_that_cannot_place_its_jobs_does_not_start(tmp_path: Path) -> None:
    """Through Celery's own worker_init (which swallows handler exceptions): the worker exits, saying why."""
    script = """
from workers.celery_app import celery_app
from workers import devices
celery_app.WorkController(queues=["gpu"], pool_cls="prefork", concurrency=2)
print("planned", devices._plan.describe())
celery_app.WorkController(queues=["gpu"], pool_cls="prefork", concurrency=3)
print("started anyway")
"""
    env = {**os.environ, "OPENRFT_WORKER_GPUS": "0,1", "OPENRFT_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert "planned slot 0: GPU 0, slot 1: GPU 1" in out.stdout and "started anyway" not in out.stdout
    assert out.returncode == 1 and "--concurrency 3 needs 3 GPUs" in out.stderr
