"""The embedded service as a child process of the demo: ``openrft serve`` on a free port with its own home."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx

from openrft._exceptions import OpenRFTError


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedService:
    """Start with :meth:`start`, stop with :meth:`stop`. Everything it stores lives under ``home``, which is
    kept between runs (a second demo reuses the converted base model and starts faster)."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home.resolve()
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_key = self._demo_key()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        return self.home / "serve.log"

    def _demo_key(self) -> str:
        # The key file the CLI reads ($OPENRFT_HOME/api_key), reused if there; the service registers it at
        # start-up (OPENRFT_BOOTSTRAP_API_KEY), so it is valid on a fresh home and on an old one alike.
        path = self.home / "api_key"
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        self.home.mkdir(parents=True, exist_ok=True)
        ignore = self.home / ".gitignore"
        if not ignore.exists():  # the default home sits in the checkout: keep it out of git
            ignore.write_text("*\n")
        key = "sk-openrft-demo-" + secrets.token_hex(20)
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(
            OPENRFT_HOME=str(self.home),
            OPENRFT_BOOTSTRAP_API_KEY=self.api_key,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, timeout: float = 180.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openrft.cli", "serve", "--port", str(self.port)],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OpenRFTError(
                    f"the service exited during start-up; see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise OpenRFTError(f"the service did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """Ctrl+C for ``openrft serve`` (it then stops the workers it spawned), harder if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
