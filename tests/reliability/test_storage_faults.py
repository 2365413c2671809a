"""A full or read-only disk under the live service: uploads are refused with a clear error and leave the
stored files as they were; a job whose disk fills up between checkpoints fails with a clear error and its
earlier checkpoints stay loadable. The disks are small tmpfs mounts (root only; skipped otherwise)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lifecycle import TERMINAL, all_events, sdk, upload_rows, wait_status
from tests.reliability.conftest import Service, tiny_models_env
from tests.support import supervised_rows, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("storage-faults")]


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def _fill(path: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = path / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    try:
        with filler.open("ab") as fh:  # the last partial megabyte too
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass
    return filler


@pytest.fixture(scope="module")
def service(make_service, pg_url, private_redis, tiny_model_dir, tmp_path_factory) -> Iterator[Service]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount small tmpfs disks")
    mounts = []
    svc = make_service(
        database_url=pg_url, redis_url=private_redis.url, extra=tiny_models_env(tiny_model_dir)
    )
    for sub, size in (("files", "8m"), ("jobs", "64m")):
        if not _mount(svc.home / sub, size):
            pytest.skip("mounting a tmpfs is not permitted here")
        mounts.append(svc.home / sub)
    svc.start_api()
    svc.start_worker("default,gpu", name="worker", beat=True)
    try:
        yield svc
    finally:
        svc.stop()
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


def _stored(svc: Service) -> list[str]:
    return sorted(p.name for p in (svc.home / "files").rglob("*") if p.is_file())


def test_uploads_to_a_full_or_read_only_disk_fail_clearly_and_keep_old_files(service: Service):
    client = sdk(service.base_url, service.api_key)
    kept = b'{"messages": [{"role": "user", "content": "q"}]}\n' * 20_000  # ~1 MB
    kept_id = client.files.create(file=("kept.jsonl", io.BytesIO(kept)), purpose="fine-tune").id
    before = _stored(service)

    import httpx

    auth = {"Authorization": f"Bearer {service.api_key}"}
    too_big = httpx.post(
        f"{service.base_url}/files",
        headers=auth,
        files={"file": ("big.jsonl", io.BytesIO(b"x" * (12 << 20)))},
        data={"purpose": "fine-tune"},
        timeout=60,
    )
    assert too_big.status_code == 507, too_big.text
    error = too_big.json()["error"]
    assert error["code"] == "storage_error" and "No space left on device" in error["message"], error
    assert _stored(service) == before  # the partial upload is gone
    assert hashlib.sha256(client.files.content(kept_id).content).digest() == hashlib.sha256(kept).digest()

    _remount(service.home / "files", "ro")
    try:
        read_only = httpx.post(
            f"{service.base_url}/files",
            headers=auth,
            files={"file": ("small.jsonl", io.BytesIO(b"{}\n"))},
            data={"purpose": "fine-tune"},
            timeout=60,
        )
        assert read_only.status_code == 507, read_only.text
        assert "Read-only file system" in read_only.json()["error"]["message"]
        assert client.files.content(kept_id).content == kept  # reads still work
    finally:
        _remount(service.home / "files", "rw")
    small = client.files.create(file=("small.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    assert small.bytes == 3  # writable again: nothing was left broken
    assert service.healthy()


def test_a_disk_that_fills_during_training_fails_the_job_clearly_and_keeps_checkpoints(service: Service):
    client = sdk(service.base_url, service.api_key)
    train = upload_rows(client, supervised_rows(8), "train.jsonl")
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=train,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 1}}},
    )
    wait_until(
        lambda: any(
            m.startswith("Checkpoint created") for m in (e.message for e in all_events(client, job.id))
        ),
        240,
        interval=0.3,
        what="a first checkpoint",
    )
    filler = _fill(service.home / "jobs")
    try:
        done = wait_status(client, job.id, TERMINAL, 240)
    finally:
        filler.unlink()
    assert done.status == "failed", done
    assert done.error.code == "storage_error", done.error
    assert (
        "No space left on device" in done.error.message
        and "Checkpoints saved before this are intact" in done.error.message
    )
    assert str(service.home) not in done.error.message  # the worker's paths stay in its log

    # what was saved before the disk filled is whole: the run state parses, the checkpoints load
    workdir = service.home / "jobs" / job.id
    json.loads((workdir / "state" / "state.json").read_text())
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints
    from safetensors.torch import load_file

    for ckpt in checkpoints:
        step_dir = workdir / "checkpoints" / f"step-{ckpt.step_number}"
        assert load_file(str(step_dir / "adapter_model.safetensors")), step_dir
    assert service.healthy()
