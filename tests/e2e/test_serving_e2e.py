"""Train on the tiny model, then talk to the fine-tuned model and its checkpoint through the official SDK on
the embedded CPU engine (started by the API on first use), plain and streamed."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.e2e.lifecycle import TERMINAL, sdk, upload_rows, wait_status
from tests.support import supervised_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPT = [{"role": "user", "content": "What is 3 + 1?"}]


def _chat(client: OpenAI, model: str) -> str:
    resp = client.chat.completions.create(model=model, messages=PROMPT, temperature=0, max_tokens=12, seed=0)
    assert resp.object == "chat.completion" and resp.model == model
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    return resp.choices[0].message.content or ""


def test_fine_tuned_model_is_served(embedded_service):
    client = sdk(embedded_service.base_url, embedded_service.api_key)
    # The first request starts the engine: 503 with retry-after, which the SDK honours.
    client = client.with_options(max_retries=6, timeout=120)
    # Supervised LoRA on the random tiny model moves its greedy output off the base model's quickly.
    train = upload_rows(client, supervised_rows(16), "sft.jsonl")
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=train,
        suffix="chat",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 6, "learning_rate_multiplier": 20}},
        },
    )
    done = wait_status(client, job.id, TERMINAL, 300)
    assert done.status == "succeeded", done.error
    ft = done.fine_tuned_model
    assert ft

    base_text = _chat(client, "tiny-test")
    ft_text = _chat(client, ft)
    assert ft_text != base_text, "the fine-tuned adapter did not change the greedy output"

    stream = client.chat.completions.create(
        model=ft, messages=PROMPT, temperature=0, max_tokens=12, seed=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == ft_text

    ckpt = next(iter(client.fine_tuning.jobs.checkpoints.list(job.id))).fine_tuned_model_checkpoint
    assert _chat(client, ckpt)

    completion = client.completions.create(model=ft, prompt="2 + 2 =", max_tokens=5, temperature=0)
    assert completion.choices[0].text is not None

    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="ft:tiny-test:nobody::ftjob-missing", messages=PROMPT)
    client.models.delete(ft)
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model=ft, messages=PROMPT, max_tokens=2)
