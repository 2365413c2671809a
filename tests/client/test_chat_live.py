"""Chat completions through the live service's CPU engine (the tiny model): whole replies, streamed chunks
(sync and async), the CLI's one-shot and interactive chat, and errors for unknown models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from openrft import AsyncOpenRFT, NotFoundError, OpenRFT
from openrft._model_loading import retry_while_loading
from tests.client.test_cli import one_error_line, run_cli
from tests.support import LiveService

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("chat-live"),
]  # the first request starts the model's engine process

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module", autouse=True)
def engine_started(live: LiveService) -> None:
    """The tiny model's engine starts on its first request (503 model_loading until then)."""
    with OpenRFT(api_key=live.api_key, base_url=live.base_url) as client:
        retry_while_loading(
            lambda: client.chat.completions.create(model="tiny-test", messages=HELLO, max_tokens=1),
            timeout=180,
        )


def test_completion_and_stream_agree(client: OpenRFT) -> None:
    done = client.chat.completions.create(
        model="tiny-test", messages=HELLO, max_tokens=8, temperature=0, seed=1
    )
    assert done.object == "chat.completion" and done.model == "tiny-test"
    assert done.choices[0].message.role == "assistant" and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and 0 < done.usage.completion_tokens <= 8
    chunks = list(
        client.chat.completions.create(
            model="tiny-test", messages=HELLO, max_tokens=8, temperature=0, seed=1, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == (done.choices[0].message.content or "")  # greedy: the same text either way
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == done.usage.completion_tokens


def test_unknown_model_is_not_found(client: OpenRFT) -> None:
    with pytest.raises(NotFoundError) as info:
        client.chat.completions.create(model="ft:tiny-test:x::ftjob-none", messages=HELLO, max_tokens=4)
    assert info.value.param == "model"


def test_async_stream(make_async: Callable[[], AsyncOpenRFT]) -> None:
    async def run() -> tuple[str, str]:
        async with make_async() as client:
            whole = await client.chat.completions.create(
                model="tiny-test", messages=HELLO, max_tokens=6, temperature=0
            )
            stream = await client.chat.completions.create(
                model="tiny-test", messages=HELLO, max_tokens=6, temperature=0, stream=True
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content or "", "".join(parts)

    whole, streamed = asyncio.run(run())
    assert whole == streamed


def test_cli_chat_one_shot_and_interactive(live: LiveService, client: OpenRFT) -> None:
    expected = client.chat.completions.create(model="tiny-test", messages=HELLO, max_tokens=6, temperature=0)
    text = expected.choices[0].message.content or ""
    once = run_cli(
        "chat", "tiny-test", "-m", "Say hello.", "--max-tokens", "6", "--temperature", "0", live=live
    )
    assert once.returncode == 0, once.stderr
    assert once.stdout == text + "\n"
    # piped stdin: one message per line, the conversation kept between turns, 'exit' ends it
    talk = run_cli(
        "chat", "tiny-test", "--max-tokens", "4", "--temperature", "0", live=live, stdin="Say hello.\n\nagain\nexit\nnever sent\n"
    )  # fmt: skip
    assert talk.returncode == 0, talk.stderr
    assert len(talk.stdout.splitlines()) >= 2
    missing = one_error_line(run_cli("chat", "no-such-model", "-m", "hi", live=live))
    assert "no-such-model" in missing
