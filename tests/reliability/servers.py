"""Private Redis and PostgreSQL servers for fault tests: on a free loopback port, in a temporary directory,
so a test can stop and restart them without touching the machine's shared services."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.support import free_port, wait_until


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(client.ping, 20, 0.1, what="private redis")
        client.close()

    def stop(self) -> None:
        """SIGKILL: the server and everything it held in memory are gone, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` in a temporary directory (as the ``postgres`` user when run as root, which
    PostgreSQL refuses to run as)."""

    def __init__(self, workdir: Path) -> None:
        bindir = _pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = bindir
        self.dir = workdir / "pgdata"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            self._prefix = ["runuser", "-u", "postgres", "--"]
            os.chmod(workdir, 0o777)  # the postgres user must be able to create its data directory there

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-o", opts, "-w", "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash from the clients' point of view: connections drop without goodbye."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
