"""Restarts under a running job, on a private PostgreSQL and a private Redis that the test kills: the API
answers 503 (never 500) while the database is away and reconnects after, the worker's writes wait for the
database instead of crashing the job, jobs created or queued while Redis was down (or whose messages died
with it) are sent again, a killed API comes back and clients retrying through the outage succeed; every
job ends and none is left running."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.e2e.lifecycle import TERMINAL, all_events, sdk, upload_rows, wait_status
from tests.reliability.conftest import Service, tiny_models_env, wait_healthy
from tests.reliability.servers import PrivatePostgres, PrivateRedis
from tests.support import supervised_rows, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def private_pg() -> Any:
    # not under pytest's tmp dir: as root, the server runs as the postgres user, which cannot enter it
    workdir = Path(tempfile.mkdtemp(prefix="openrft-pg-"))
    try:
        server = PrivatePostgres(workdir)
        server.init()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.skip(f"cannot run a private PostgreSQL here: {exc}")
    server.start()
    yield server
    try:
        server.stop("fast")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def service(make_service, private_pg, tmp_path_factory, tiny_model_dir) -> Service:
    redis = PrivateRedis(tmp_path_factory.mktemp("redis-restarts"))
    redis.start()
    svc = make_service(
        database_url=private_pg.url, redis_url=redis.url, extra=tiny_models_env(tiny_model_dir)
    )
    svc.redis = redis  # type: ignore[attr-defined]
    svc.start_api()
    svc.start_worker("default", name="default", beat=True)
    svc.start_worker("gpu", name="gpu", beat=False)
    yield svc
    svc.stop()
    redis.stop()


def _sft_job(client: OpenAI, name: str, rows: int, epochs: int) -> Any:
    train = upload_rows(client, supervised_rows(rows), f"{name}.jsonl")
    return client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=train,
        suffix=name,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": 1}},
        },
    )


def _status(client: OpenAI, job_id: str) -> str:
    return str(client.fine_tuning.jobs.retrieve(job_id).status)


def test_restarts_of_postgres_redis_and_the_api_during_jobs(service: Service, private_pg: PrivatePostgres):
    client = sdk(service.base_url, service.api_key)
    # 480 steps: still running after every fault below even on an idle machine; cancelled once they are over
    long_job = _sft_job(client, "long", rows=16, epochs=30)
    wait_status(client, long_job.id, ("running",), 120)
    wait_until(
        lambda: any(e.type == "metrics" for e in all_events(client, long_job.id)), 120, what="a first step"
    )
    queued_job = _sft_job(client, "queued", rows=2, epochs=1)  # waits behind it: its message is in Redis
    wait_status(client, queued_job.id, ("queued",), 60)
    during: dict[str, str] = {}

    # PostgreSQL goes away for a few seconds: the API says 503 (retryable), the job keeps training.
    private_pg.stop("immediate")
    codes = set()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        codes.add(
            httpx.get(f"{service.base_url}/fine_tuning/jobs", headers=_auth(service), timeout=30).status_code
        )
        time.sleep(0.3)
    private_pg.start()
    assert codes == {503}, codes
    during["postgres"] = _status(client, long_job.id)

    # Redis dies with the queued job's message in it; a job created while it is down cannot be sent.
    service.redis.stop()  # type: ignore[attr-defined]
    unsent_job = _sft_job(client, "unsent", rows=2, epochs=1)
    assert unsent_job.status == "validating_files"
    time.sleep(1)
    service.redis.start()  # type: ignore[attr-defined]
    during["redis"] = _status(client, long_job.id)

    # The API is killed; a client that retries (the SDK does, with backoff) gets through once it is back.
    service.kill("api")
    answer: list[Any] = []
    patient = OpenAI(base_url=service.base_url, api_key=service.api_key, max_retries=6, timeout=30)
    caller = threading.Thread(target=lambda: answer.append(patient.fine_tuning.jobs.retrieve(long_job.id)))
    caller.start()
    service.start_api()
    wait_healthy(service)
    caller.join(60)
    assert answer and answer[0].id == long_job.id
    during["api"] = answer[0].status

    assert during == {"postgres": "running", "redis": "running", "api": "running"}, during
    client.fine_tuning.jobs.cancel(long_job.id)
    done = {j.id: wait_status(client, j.id, TERMINAL, 400) for j in (long_job, queued_job, unsent_job)}
    errors = {k: (v.status, v.error) for k, v in done.items()}
    assert done[long_job.id].status == "cancelled", errors
    assert done[queued_job.id].status == done[unsent_job.id].status == "succeeded", errors
    # The long job's writes waited through the faults: every step it took is recorded once, none skipped.
    steps = [e.data["step"] for e in all_events(client, long_job.id) if e.type == "metrics"]
    assert len(steps) > 1 and sorted(steps) == list(range(1, len(steps) + 1)), steps
    assert not [j for j in client.fine_tuning.jobs.list(limit=100) if j.status == "running"]


def _auth(service: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.api_key}"}
