"""Fixtures for the reliability suite: a PostgreSQL database per module on the shared server, private
Redis (and PostgreSQL) servers the tests may kill, and live services built from real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.reliability.servers import PrivateRedis
from tests.support import LiveService, create_database, free_port, service_env, wait_until
from tests.workers.conftest import new_job  # noqa: F401


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url, drop = create_database("openrft_rel")
    try:
        yield url
    finally:
        drop()


@pytest.fixture(scope="session")
def shared_service(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Service]:
    """One production-shaped service for the tests that only need jobs to run (each start costs ~15 s):
    its own database on the shared PostgreSQL, a private Redis, the API, a light worker with the reaper
    and two GPU-queue workers; at most one running job per organization."""
    url, drop = create_database("openrft_rel_shared")
    redis = PrivateRedis(tmp_path_factory.mktemp("redis-shared"))
    redis.start()
    home = tmp_path_factory.mktemp("svc-shared")
    svc = Service(home=home, env={})
    svc.env = service_env(
        home,
        database_url=url,
        redis_url=redis.url,
        api_key=svc.api_key,
        extra=tiny_models_env(
            tiny_model_dir,
            OPENRFT_MAX_RUNNING_JOBS_PER_ORG="1",
            OPENRFT_GRADER_API_KEY="sk-grader-secret-0123456789",
        ),
    )
    try:
        svc.start_api()
        svc.start_worker("default", name="default", beat=True)
        svc.start_worker("gpu", name="gpu-a", beat=False)
        svc.start_worker("gpu", name="gpu-b", beat=False)
        yield svc
    finally:
        svc.stop()
        redis.stop()
        drop()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Service(LiveService):
    """A LiveService whose processes can be killed and restarted one by one."""

    named: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_api(self) -> None:
        super().start_api()
        self.named["api"] = self.procs[-1]

    def start_extra_api(self, name: str) -> int:
        """Another API process on its own port (same database, broker and settings); returns the port."""
        main_port, self.port = self.port, free_port()
        try:
            super().start_api()
            self.named[name] = self.procs[-1]
            return self.port
        finally:
            self.port = main_port

    def start_worker(
        self, queues: str = "default,gpu", name: str | None = None, beat: bool = True
    ) -> subprocess.Popen[bytes]:
        proc = super().start_worker(queues, name=name, beat=beat)
        self.named[name or f"w{len(self.procs)}"] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker's pool children die with it)."""
        proc = self.named.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def healthy(self) -> bool:
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).status_code == 200


def tiny_models_env(tiny_model_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "OPENRFT_BASE_MODELS": json.dumps({"tiny-test": str(tiny_model_dir)}),
        # A vanished worker is noticed within seconds, not minutes.
        "OPENRFT_JOB_LEASE_SECONDS": "8",
        "OPENRFT_WORKER_HEARTBEAT_SECONDS": "1",
        "OPENRFT_REAPER_INTERVAL_SECONDS": "2",
        **extra,
    }


@pytest.fixture(scope="module")
def make_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Service]]:
    """Factory for live services; every one is stopped (and its logs printed on failure) at the end."""
    started: list[Service] = []

    def make(*, database_url: str | None, redis_url: str | None, extra: dict[str, str]) -> Service:
        home = tmp_path_factory.mktemp("svc-home")
        svc = Service(home=home, env={})
        svc.env = service_env(
            home, database_url=database_url, redis_url=redis_url, api_key=svc.api_key, extra=extra
        )
        started.append(svc)
        return svc

    try:
        yield make
    finally:
        for svc in started:
            svc.stop()


@pytest.fixture
def dump_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[list[Service]]:
    services: list[Service] = []
    yield services
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for svc in services:
            print(svc.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def job_row_via_sql(database_url: str, job_id: str) -> dict[str, Any]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
            return dict(row)
    finally:
        engine.dispose()


def wait_healthy(svc: Service, timeout: float = 90) -> None:
    wait_until(svc.healthy, timeout, what="API health")
