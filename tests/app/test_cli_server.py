"""The server-side CLI: keys, and the key the embedded default prints on its first start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

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
        orgs = conn.execute(text("SELECT name FROM organizations ORDER BY name")).scalars().all()
        hashes = conn.execute(text("SELECT key_hash FROM api_keys")).scalars().all()
    engine.dispose()
    assert orgs == ["acme", "openrft-internal"]  # the service's own key (model graders) has its own org
    assert key not in hashes and len(hashes) == 2
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


def _serve(
    home: Path, port: int, log: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "openrft.cli", "serve", "--port", str(port), *extra],
            cwd=REPO, env={**_env(home), **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_healthy(port: int) -> None:
    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 90, what="the API")


def test_model_graders_call_this_service_at_its_port_with_its_own_key(tmp_path):
    """A plain `openrft serve --port N` (auto-generated key, no grader settings): model graders judge with this
    service's own models, through its own key; a grader naming a model nothing here serves (an OpenAI model
    name) is refused at validate and at graders/run, with the models it can judge with and the setting that
    adds one, instead of failing at run time with a 404 buried in grader errors."""
    port = free_port()
    home = tmp_path / "home"
    proc = _serve(home, port, tmp_path / "serve.out", "--no-worker")
    try:
        _wait_healthy(port)
        out = (tmp_path / "serve.out").read_text()
        assert f"dashboard http://127.0.0.1:{port}/dashboard/" in out
        key = (home / "api_key").read_text().strip()
        internal = (home / "internal_api_key").read_text().strip()
        assert internal != key and oct((home / "internal_api_key").stat().st_mode & 0o777) == "0o600"
        # Where the CLI finds it, and a one-time login link that the dashboard trades for the local key.
        assert (home / "server_url").read_text().strip() == f"http://127.0.0.1:{port}/v1"
        token = out.split(f"http://127.0.0.1:{port}/dashboard/#login=", 1)[1].split()[0]
        login = f"http://127.0.0.1:{port}/dashboard/login"
        assert oct((home / "dashboard_login.json").stat().st_mode & 0o777) == "0o600"
        assert token not in (home / "dashboard_login.json").read_text()  # only its digest is kept
        assert httpx.post(login, json={"token": "forged"}).status_code == 401  # and the link still works
        assert httpx.post(login, json={"token": token}).json() == {"api_key": key}
        used = httpx.post(login, json={"token": token})
        assert used.status_code == 401 and used.json()["error"]["code"] == "invalid_login_link"
        grader = {
            "type": "score_model",
            "name": "judge",
            "model": "gpt-4.1",
            "input": [{"role": "user", "content": "Rate: {{ sample.output_text }}"}],
        }
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        for call in (
            lambda: sdk.fine_tuning.alpha.graders.validate(grader=grader),  # type: ignore[arg-type]
            lambda: sdk.fine_tuning.alpha.graders.run(grader=grader, model_sample="hi"),  # type: ignore[arg-type]
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                call()
            error = refused.value.body
            assert isinstance(error, dict) and error["param"] == "grader.model", error
            assert error["code"] == "invalid_grader"
            assert "'gpt-4.1' is not served by this service" in error["message"]
            assert "smollm2-135m-instruct" in error["message"] and "OPENRFT_GRADER_MODELS" in error["message"]
        # The internal key sees base models only: it is its own organization, no tenant's.
        models = httpx.get(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {internal}"}
        ).json()
        assert "smollm2-135m-instruct" in [m["id"] for m in models["data"]]
    finally:
        proc.terminate()
        proc.wait(30)
    assert not (home / "server_url").exists()  # a stopped server is not found any more


def _descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _running(pids: list[int]) -> list[int]:
    """The processes among ``pids`` still alive (a zombie waits only for its parent to reap it)."""
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def _kill_all(pids: list[int]) -> None:
    """Never leave strays behind a failed test."""
    import psutil

    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


@pytest.mark.slow
def test_sigterm_stops_every_child(tmp_path):
    """`kill` / systemd stop `openrft serve` with SIGTERM: the Celery workers (and their pool children)
    and the grading pool end with it, none is left running under PID 1."""
    import psutil

    port = free_port()
    home = tmp_path / "home"
    log = tmp_path / "serve.out"
    proc = _serve(home, port, log)
    children: list[int] = []
    try:
        _wait_healthy(port)
        key = (home / "api_key").read_text().strip()
        grader = {"type": "string_check", "name": "s", "input": "a", "reference": "a", "operation": "eq"}
        resp = httpx.post(
            f"http://127.0.0.1:{port}/v1/fine_tuning/alpha/graders/run",
            json={"grader": grader, "model_sample": "a"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text

        def started() -> bool:
            cmdlines = [" ".join(psutil.Process(p).cmdline()) for p in _descendants(proc.pid)]
            return sum("celery" in c and "worker" in c for c in cmdlines) >= 2 and any(
                "multiprocessing" in c for c in cmdlines
            )

        wait_until(started, 90, what="the workers and the grading pool")
        children = _descendants(proc.pid)
        # the workers' model graders call this service at its real port, too
        workers = [psutil.Process(p) for p in children if "celery" in " ".join(psutil.Process(p).cmdline())]
        for worker in workers:
            assert worker.environ()["OPENRFT_PUBLIC_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        wait_until(
            lambda: not _running(children),
            30,
            what="every child to exit",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_all(children)


@pytest.mark.slow
def test_a_score_model_grader_is_answered_by_this_services_own_engine(tmp_path, tiny_model_dir):
    """The whole path with nothing configured: grader -> this service (internal key) -> the CPU engine of
    the base model -> a reply the grader reads. The grader asks for a json_schema answer and the engine
    decodes under it, so even the tiny random model's reply parses into a score, and the bundled SmolLM2
    rates a right answer. SIGTERM then stops the engine processes as well."""
    import json as jsonlib

    import psutil

    port = free_port()
    home = tmp_path / "home"
    extra = {
        "OPENRFT_BASE_MODELS": jsonlib.dumps({"tiny-test": str(tiny_model_dir)}),
        "OPENRFT_SERVING_BACKEND": "cpu",
    }
    proc = _serve(home, port, tmp_path / "serve.out", "--no-worker", env=extra)
    children: list[int] = []
    try:
        _wait_healthy(port)
        key = (home / "api_key").read_text().strip()
        grader = {
            "type": "score_model",
            "name": "judge",
            "model": "tiny-test",
            "input": [{"role": "user", "content": "Rate 0-1: {{ sample.output_text }}"}],
            "sampling_params": {"max_completions_tokens": 96, "temperature": 0},
        }
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=600)
        result = sdk.fine_tuning.alpha.graders.run(grader=grader, model_sample="hi")  # type: ignore[arg-type]
        errors = result.metadata.errors
        assert not errors.model_grader_server_error, errors.model_grader_server_error_details
        assert not errors.model_grader_parse_error, result.metadata
        assert result.metadata.sampled_model_name == "tiny-test"
        assert result.api_model_grader_token_usage_per_model["tiny-test"]["completion_tokens"] > 0  # type: ignore[index]
        assert isinstance(result.metadata.token_usage, int) and result.metadata.token_usage > 0
        assert 0.0 <= result.reward <= 1.0
        # The bundled SmolLM2 as the judge: a parsed score, for the right and for a wrong answer.
        judge = {
            "type": "score_model",
            "name": "smol",
            "model": "smollm2-135m-instruct",
            "input": [
                {"role": "system", "content": "You grade answers to arithmetic questions."},
                {
                    "role": "user",
                    "content": "Question: {{ item.question }} Reference answer: {{ item.answer }} "
                    "Student answer: {{ sample.output_text }}",
                },
            ],
            "sampling_params": {"max_completions_tokens": 160, "temperature": 0},
        }
        item = {"question": "What is 2 + 2?", "answer": "4"}
        for sample in ("4", "7"):
            scored = sdk.fine_tuning.alpha.graders.run(grader=judge, model_sample=sample, item=item)  # type: ignore[arg-type]
            assert not scored.metadata.errors.model_grader_parse_error, scored.metadata
            assert not scored.metadata.errors.model_grader_server_error, scored.metadata
            assert scored.metadata.sampled_model_name == "smollm2-135m-instruct"
            assert 0.0 <= scored.reward <= 1.0
        children = _descendants(proc.pid)
        assert any("serving.cpu_server" in " ".join(psutil.Process(p).cmdline()) for p in children)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_until(
            lambda: not _running(children),
            30,
            what="the engine and the grading pool to exit",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_all(children)


@pytest.mark.slow
def test_a_killed_serve_takes_its_workers_with_it(tmp_path):
    """`kill -9` of `openrft serve` (no handler runs): its Celery workers, in sessions of their own, get SIGTERM
    from the kernel and stop, instead of polling a home that may be gone for good."""
    import psutil

    port = free_port()
    proc = _serve(tmp_path / "home", port, tmp_path / "serve.out")
    workers: list[int] = []
    try:
        _wait_healthy(port)

        def started() -> list[int]:
            return [p for p in _descendants(proc.pid) if "celery" in " ".join(psutil.Process(p).cmdline())]

        wait_until(lambda: len(started()) >= 2, 90, what="the workers")
        workers = started()
        proc.kill()
        proc.wait(10)
        wait_until(
            lambda: not _running(workers),
            60,
            what="the workers to stop after their parent was killed",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(workers)
