"""Helpers shared by tests: data files, free ports, waiting, and a live service (API + Celery workers)
started as real subprocesses. The modules beside this one are test-only code that the benchmarks and
scripts/gpu_check.py use too: ``tiny`` (a tiny model built locally), ``gateway`` (the chat route's shape over
a ServingService) and ``http_thread`` (uvicorn in a thread)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the service may still be starting
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def arithmetic_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Reinforcement rows: a question whose answer a string_check grader can verify."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)})
    return rows


def supervised_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + 1?"},
                {"role": "assistant", "content": f"The answer is {i + 1}."},
            ]
        }
        for i in range(n)
    ]


STRING_CHECK_GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "eq",
}


@dataclass
class LiveService:
    """The API (uvicorn) and Celery workers as subprocesses, against a given database and broker."""

    home: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_key: str = field(default_factory=lambda: f"sk-test-{uuid.uuid4().hex}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def start_api(self, *, embedded: bool = False) -> None:
        """`openrft serve`: the API alone, or (``embedded``) with the workers it spawns itself."""
        args = [sys.executable, "-m", "openrft.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self._spawn("serve" if embedded else "api", args if embedded else [*args, "--no-worker"])
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200,
            90,
            what="API",
        )

    def start_worker(
        self, queues: str = "default,gpu", name: str | None = None, beat: bool = True
    ) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "openrft.cli",
            "worker",
            "-Q",
            queues,
            "--name",
            name or f"w{len(self.procs)}",
        ]
        if beat:
            args.append("--beat")
        return self._spawn(f"worker-{name or len(self.procs)}", args)

    def stop(self) -> None:
        import signal

        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {f.name}\n{f.read_text(errors='replace')[-4000:]}" for f in sorted(self.home.glob("*.log"))
        )


def service_env(
    home: Path,
    *,
    database_url: str | None,
    redis_url: str | None,
    api_key: str,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        OPENRFT_HOME=str(home),
        OPENRFT_BOOTSTRAP_API_KEY=api_key,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        OPENRFT_CONTROL_POLL_SECONDS="0.5",
        OPENRFT_WORKER_HEARTBEAT_SECONDS="2",
        # A shared test service takes many tests' uploads through one key; the limit is tested on its own.
        OPENRFT_RATE_LIMIT_FILES_PER_MINUTE="0",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def create_database(prefix: str) -> tuple[str, Callable[[], None]]:
    """A new, empty PostgreSQL database: its URL and the function that drops it (open connections or not)."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"postgresql://postgres@127.0.0.1:5432/{name}", drop
