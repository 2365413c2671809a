"""client.fine_tuning.jobs against a live service: typed options, listing, state changes, events, and
``follow`` / ``wait`` on a real (tiny) training job."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from openrft import BadRequestError, NotFoundError, OpenRFT
from tests.support import STRING_CHECK_GRADER, arithmetic_rows

# The smallest real RL run on the tiny model: no SFT warm-up, two steps, two short rollouts per prompt.
TINY_RUN: dict[str, Any] = {
    "sft": {"enabled": False},
    "rl": {"max_steps": 2, "num_generations": 2, "early_stop": False},
    "eval": {"max_samples": 2, "holdout": 0},
}


def upload(client: OpenRFT, n: int, seed: int = 0) -> str:
    data = "".join(json.dumps(r) + "\n" for r in arithmetic_rows(n, seed=seed)).encode()
    return client.files.create(data, filename="rows.jsonl", validate="reinforcement").id


def test_create_sends_typed_openrft_options_and_method(client: OpenRFT) -> None:
    tag = uuid.uuid4().hex
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=upload(client, 4),
        validation_file=upload(client, 2, seed=1),
        grader=STRING_CHECK_GRADER,
        hyperparameters={"n_epochs": 1, "batch_size": 2, "reasoning_effort": "low"},
        suffix="typed",
        seed=7,
        metadata={"tag": tag},
        openrft={"rl": {"temperature": 0.9}},
        rl={"max_steps": 3},  # merged into the openrft object key by key
        icl_k=2,
        max_minutes=5,
        lora_rank=4,
    )
    try:
        assert job.id.startswith("ftjob-") and job.status == "validating_files"
        assert (job.model, job.seed, job.suffix, job.metadata) == ("tiny-test", 7, "typed", {"tag": tag})
        assert job.method is not None and job.method.type == "reinforcement"
        assert job.method.reinforcement is not None
        assert job.method.reinforcement.to_dict()["grader"]["reference"] == "{{ item.answer }}"
        hp = job.method.reinforcement.hyperparameters
        assert hp is not None and (hp.n_epochs, hp.batch_size, hp.reasoning_effort) == (1, 2, "low")
        assert job.openrft is not None
        assert job.openrft["rl"]["max_steps"] == 3 and job.openrft["rl"]["temperature"] == 0.9
        assert (job.openrft["icl_k"], job.openrft["max_minutes"], job.openrft["lora_rank"]) == (2, 5, 4)
        assert client.fine_tuning.jobs.retrieve(job.id).openrft == job.openrft
    finally:
        client.fine_tuning.jobs.cancel(job.id)


def test_invalid_option_is_a_400_naming_the_field(client: OpenRFT) -> None:
    with pytest.raises(BadRequestError) as info:
        client.fine_tuning.jobs.create(
            model="tiny-test", training_file=upload(client, 2), grader=STRING_CHECK_GRADER, rl={"beta": 5}
        )
    assert info.value.param == "openrft.rl.beta" and info.value.code == "invalid_hyperparameters"
    with pytest.raises(BadRequestError) as info:
        client.fine_tuning.jobs.create(
            model="tiny-test", training_file=upload(client, 2), grader={"type": "string_check"}
        )
    assert info.value.code == "invalid_grader"


def test_list_filters_metadata_and_pages(client: OpenRFT) -> None:
    tag = uuid.uuid4().hex
    train = upload(client, 2)
    ids = []
    for _ in range(3):
        job = client.fine_tuning.jobs.create(
            model="tiny-test", training_file=train, grader=STRING_CHECK_GRADER, metadata={"tag": tag}
        )
        ids.append(job.id)
        client.fine_tuning.jobs.cancel(job.id)
    first = client.fine_tuning.jobs.list(limit=1, metadata={"tag": tag})
    assert [j.id for j in first.data] == [ids[-1]] and first.has_more
    assert [j.id for j in first] == ids[::-1]
    assert list(client.fine_tuning.jobs.list(metadata={"tag": "nothing-has-this"})) == []


def test_state_changes_and_events(client: OpenRFT) -> None:
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=upload(client, 2),
        grader=STRING_CHECK_GRADER,
        rl={"max_steps": 50},
    )
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    for action in (
        client.fine_tuning.jobs.pause,
        client.fine_tuning.jobs.resume,
        client.fine_tuning.jobs.cancel,
    ):
        with pytest.raises(BadRequestError) as info:
            action(job.id)
        assert info.value.code == "invalid_job_state" and info.value.status_code == 400
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert messages[0] == "Job cancelled by the user."  # newest first
    assert messages[-1] == f"Created fine-tuning job: {job.id}"
    page = client.fine_tuning.jobs.list_events(job.id, limit=1)
    assert len(page.data) == 1 and [e.message for e in page] == messages
    assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []
    with pytest.raises(NotFoundError) as nf:
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert nf.value.param == "fine_tuning_job_id"


def test_wait_stops_at_pause_and_resume_requeues(client: OpenRFT) -> None:
    job = client.fine_tuning.jobs.create(
        model="tiny-test", training_file=upload(client, 4), grader=STRING_CHECK_GRADER, **TINY_RUN
    )
    try:
        client.fine_tuning.jobs.wait(job.id, statuses=("queued", "running"), poll_interval=0.2, timeout=60)
        client.fine_tuning.jobs.pause(job.id)
        stopped = client.fine_tuning.jobs.wait(job.id, poll_interval=0.5, timeout=180)
        assert stopped.status in ("paused", "succeeded"), stopped.error
        if stopped.status == "paused":
            assert client.fine_tuning.jobs.resume(job.id).status == "queued"
        with pytest.raises(TimeoutError, match=job.id):
            client.fine_tuning.jobs.wait(job.id, statuses=("nonexistent",), poll_interval=0.1, timeout=0.3)
    finally:
        if client.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed", "cancelled"):
            client.fine_tuning.jobs.cancel(job.id)
