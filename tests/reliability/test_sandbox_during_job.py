"""A python grader that attacks the sandbox while a real RL job runs through the live service: the job still
finishes (or, when it fails on every sample, fails cleanly on its errors), the API and the workers stay up, and nothing secret (the service's keys, its environment, its
files) reaches anything the tenant can read (events, the job, the results file). The attacks one by one
are tested in tests/trainer/graders/test_sandbox.py; this is the same hostility inside a running job."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from tests.e2e.lifecycle import TERMINAL, all_events, sdk, upload_rows, wait_status
from tests.reliability.conftest import Service
from tests.support import arithmetic_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("reliability-shared-service")]

LEAKED = 666.0  # the reward the grader gives itself when an attack got through

ATTACKER = textwrap.dedent(
    r"""
    import os, signal, socket
    from pathlib import Path

    def _try(fn):
        try:
            return fn()
        except BaseException as exc:  # noqa: BLE001 - an attacker tries everything
            return None

    def _connect(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
        s.close()
        return port

    def _read(path):
        return Path(path).read_text(errors="replace")[:2000]

    def grade(sample, item):
        found = []
        found.append(" ".join(f"{k}={v}" for k, v in os.environ.items()))
        for path in item["paths"]:
            found.append(_try(lambda: _read(path)) or "")
        for pid in _try(lambda: [p for p in os.listdir("/proc") if p.isdigit()]) or []:
            found.append(_try(lambda: _read(f"/proc/{pid}/environ")) or "")
        reached = [p for p in item["ports"] if _try(lambda: _connect(p))]
        _try(lambda: os.kill(os.getppid(), signal.SIGKILL))
        _try(lambda: os.kill(1, signal.SIGKILL))
        wrote = [p for p in item["paths"] if _try(lambda: Path(p).write_text("pwned")) is not None]
        fatal = len(sample["output_text"]) % 4
        if fatal == 0:
            _try(lambda: bytearray(16 << 30))
        elif fatal == 1:
            _try(lambda: [os.fork() for _ in range(1000)])
        elif fatal == 2 and item["mode"] == "loud":
            os._exit(3)  # the warm sandbox process dies mid-batch
        if reached or wrote:
            return 666.0
        if item["mode"] == "quiet":  # attacks, then grades: the job must run to its end
            return 0.0
        # try to smuggle whatever was found out through the error message
        raise RuntimeError("exfiltrate: " + " | ".join(found))
    """
)


@pytest.fixture
def service(shared_service: Service) -> Service:
    return shared_service  # its environment holds OPENRFT_GRADER_API_KEY=sk-grader-secret-0123456789


def test_a_grader_attacking_the_sandbox_cannot_stop_the_job_or_leak(service: Service):
    secret_file = service.home / "operator-secret.txt"
    secret_file.write_text("operator-file-secret-42")
    secrets = [
        service.api_key,
        "sk-grader-secret-0123456789",
        "operator-file-secret-42",
        service.env["DATABASE_URL"],
    ]
    targets = {
        "paths": [
            str(secret_file),
            str(service.home / "api_key"),
            str(service.home / "files"),
            "/etc/shadow",
        ],
        "ports": [service.port, 5432, int(service.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])],
    }
    client = sdk(service.base_url, service.api_key)

    def attack(mode: str) -> Any:
        rows = [{**r, **targets, "mode": mode} for r in arithmetic_rows(4)]
        return run_attacked_job(client, rows, [{**rows[0]}])

    # A grader that attacks on every sample and then grades: the job runs to its end.
    done, events = attack("quiet")
    assert done.status == "succeeded", (done.error, [e.message for e in events][:20])
    # no attack got through: a grade of 666 would show in the rewards
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all((m.get("train_mean_reward") or 0) < LEAKED for m in metrics), metrics
    visible = json.dumps([e.model_dump() for e in events]) + json.dumps(done.model_dump())
    visible += "".join(client.files.content(f).text for f in done.result_files)  # metrics and rollouts
    assert len(done.result_files) == 2

    # One that also kills its sandbox and smuggles what it found out through its error on every sample: the
    # job fails early and cleanly on the grader's errors (a reward that measures nothing), and the error says so.
    failed, loud_events = attack("loud")
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "grader_error"
    assert "The grader failed on" in failed.error.message
    visible += json.dumps([e.model_dump() for e in loud_events]) + json.dumps(failed.model_dump())

    # nothing secret in anything the tenant can read
    for secret in secrets:
        assert secret not in visible, f"{secret!r} leaked to the tenant"
    assert secret_file.read_text() == "operator-file-secret-42"  # and nothing was overwritten

    # the service is still whole
    assert service.healthy()
    assert all(p.poll() is None for p in service.named.values()), "a service process died"


def run_attacked_job(client: Any, rows: list[dict[str, Any]], valid_rows: list[dict[str, Any]]) -> Any:
    train = upload_rows(client, rows, "attack.jsonl")
    valid = upload_rows(client, valid_rows, "valid.jsonl")
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=train,
        validation_file=valid,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": {"type": "python", "name": "attacker", "source": ATTACKER},
                "hyperparameters": {"reasoning_effort": "low", "batch_size": 2},
            },
        },
        extra_body={
            "openrft": {
                "sft": {"enabled": False},
                "rl": {"num_generations": 2, "max_steps": 2, "early_stop": False},
                "eval": {"max_samples": 1, "at_start": False, "holdout": 0},
            }
        },
    )
    done = wait_status(client, job.id, TERMINAL, 400)
    return done, all_events(client, job.id)
