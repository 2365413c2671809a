"""The job lifecycle scenarios, run against any live service with the official `openai` SDK."""

from __future__ import annotations

import io
import json
import time
from typing import Any

from openai import OpenAI

from tests.support import STRING_CHECK_GRADER, arithmetic_rows, wait_until

TERMINAL = ("succeeded", "failed", "cancelled")


def sdk(base_url: str, key: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


def upload_rows(client: OpenAI, rows: list[dict[str, Any]], name: str) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


# Small but real: rejection sampling off (SFT on reference answers), a few GRPO steps, tiny evals.
FAST = {
    "sft": {"samples_per_question": 0, "n_epochs": 1},
    "rl": {"num_generations": 2, "early_stop": False},
    "eval": {"max_samples": 2, "holdout": 0},
}


def create_rft_job(
    client: OpenAI, *, hyperparameters: dict[str, Any] | None = None, rl_steps: int = 2, **extra: Any
) -> Any:
    train = upload_rows(client, arithmetic_rows(8), "train.jsonl")
    valid = upload_rows(client, arithmetic_rows(4, seed=1), "valid.jsonl")
    return client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=train,
        validation_file=valid,
        suffix="e2e",
        seed=3,
        metadata={"suite": "e2e"},
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": dict(STRING_CHECK_GRADER),
                "hyperparameters": {"reasoning_effort": "low", **(hyperparameters or {})},
            },
        },
        extra_body={"openrft": {**FAST, "rl": {**FAST["rl"], "max_steps": rl_steps}}},
        **extra,
    )


def wait_status(client: OpenAI, job_id: str, statuses: tuple[str, ...], timeout: float) -> Any:
    return wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in statuses and j,
        timeout,
        interval=0.5,
        what=f"job {job_id} to reach {statuses}",
    )


def all_events(client: OpenAI, job_id: str) -> list[Any]:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=50))


def run_full_lifecycle(client: OpenAI) -> None:
    job = create_rft_job(client, hyperparameters={"batch_size": 2}, rl_steps=2)
    assert job.status == "validating_files"
    done = wait_status(client, job.id, TERMINAL, 300)
    events = all_events(client, job.id)
    assert done.status == "succeeded", (done.error, [e.message for e in events][:15])
    assert (
        done.fine_tuned_model
        and done.fine_tuned_model.startswith("ft:tiny-test:")
        and done.fine_tuned_model.endswith(f":e2e:{job.id}")
    )
    assert done.finished_at and done.trained_tokens is not None
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"  # newest first
    assert messages[-1].startswith("Created fine-tuning job")
    assert any(e.type == "metrics" for e in events)
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and all(
        c.fine_tuned_model_checkpoint.startswith(done.fine_tuned_model) for c in checkpoints
    )
    assert len(done.result_files) == 2  # per-step metrics, then one group of sampled rollouts per RL step
    csv = client.files.content(done.result_files[0]).text
    assert csv.splitlines()[0].startswith("step")
    rollouts = [json.loads(line) for line in client.files.content(done.result_files[1]).text.splitlines()]
    rl_steps = sorted({r["step"] for r in rollouts})
    assert len(rl_steps) == 2 and all(isinstance(r["completion"], str) and "reward" in r for r in rollouts)
    models = [m.id for m in client.models.list()]
    assert done.fine_tuned_model in models
    # auto-pagination over jobs with the SDK's pager and a metadata filter
    listed = [j.id for j in client.fine_tuning.jobs.list(limit=1, metadata={"suite": "e2e"})]
    assert job.id in listed


def run_cancel(client: OpenAI) -> None:
    job = create_rft_job(client, hyperparameters={"batch_size": 2}, rl_steps=500)
    wait_status(client, job.id, ("running",), 120)
    started = time.monotonic()
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    # the worker notices within seconds and stops; the status never changes again
    wait_until(
        lambda: any("stopped training after the cancel" in e.message for e in all_events(client, job.id)),
        30,
        what="the worker to stop training",
    )
    assert time.monotonic() - started < 30
    time.sleep(3)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def run_pause_resume(client: OpenAI) -> None:
    job = create_rft_job(client, hyperparameters={"batch_size": 2}, rl_steps=4)
    wait_status(client, job.id, ("running",), 120)
    # let at least one step happen so the snapshot has progress in it
    wait_until(lambda: any(e.type == "metrics" for e in all_events(client, job.id)), 120, what="a first step")
    client.fine_tuning.jobs.pause(job.id)
    paused = wait_status(client, job.id, ("paused", *TERMINAL), 120)
    assert paused.status == "paused", paused
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = wait_status(client, job.id, TERMINAL, 300)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in all_events(client, job.id)]
    assert any("paused" in m.lower() for m in messages) and any("resum" in m.lower() for m in messages)
