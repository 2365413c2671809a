"""The server-side CLI: keys, and the key the embedded default prints on its first start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import REPO, free_port, wait_until


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "OPENRFT_BOOTSTRAP_API_KEY")
    }
    env["OPENRFT_HOME"] = str(home)
    return env


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrft.cli", *args],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_keys_create_and_revoke(tmp_path):
    created = _cli(tmp_path, "keys", "create", "--org", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-openrft-")
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'openrft.db'}")
    with engine.connect() as conn:
        orgs = conn.execute(text("SELECT name FROM organizations")).scalars().all()
        hashes = conn.execute(text("SELECT key_hash FROM api_keys")).scalars().all()
    engine.dispose()
    assert orgs == ["acme"]
    assert key not in hashes and len(hashes) == 1
    revoked = _cli(tmp_path, "keys", "revoke", key)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = _cli(tmp_path, "keys", "revoke", key)
    assert again.returncode == 1
    assert "no active key" in again.stderr and "Traceback" not in again.stderr
    bad_org = _cli(tmp_path, "keys", "create", "--org", "bad org!")
    assert (
        bad_org.returncode == 1
        and bad_org.stderr.startswith("openrft: error:")
        and "Traceback" not in bad_org.stderr
    )


def test_first_start_prints_a_working_key(tmp_path):
    port = free_port()
    log = tmp_path / "serve.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "openrft.cli", "serve", "--no-worker", "--port", str(port)],
            cwd=REPO, env=_env(tmp_path / "home"), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: "sk-openrft-" in log.read_text(), 60, what="the printed key")
        key = next(w for w in log.read_text().split() if w.startswith("sk-openrft-"))
        assert (tmp_path / "home" / "api_key").read_text().strip() == key
        assert oct((tmp_path / "home" / "api_key").stat().st_mode & 0o777) == "0o600"
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200, 60, what="the API"
        )
        resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200
        assert "smollm2-135m-instruct" in [m["id"] for m in resp.json()["data"]]
    finally:
        proc.terminate()
        proc.wait(20)
