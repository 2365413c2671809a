"""``chat.completions.create(stream=True)`` (sync and async; the SDK's streaming, through ``OpenRFT``) against a
scripted server that streams like this service (chunks, comments, a final usage chunk, ``[DONE]``, the
service's ``reasoning_content`` beside OpenAI's fields)."""

from __future__ import annotations

import asyncio
import json

import pytest

from openrft import APIError, AsyncOpenRFT, OpenRFT
from tests.client.fake_server import Reply, fake_server


def _chunk(content: str | None, finish: str | None = None, usage: bool = False) -> dict:
    body: dict = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return body


def _sse(*events: dict | str) -> bytes:
    out = [": keep-alive\n\n"]
    for e in events:
        out.append(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n")
    return "".join(out).encode()


STREAM = _sse(
    {**_chunk(None), "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
    _chunk("Hel"),
    _chunk("lo"),
    _chunk(None, "stop"),
    _chunk(None, usage=True),
    "[DONE]",
)
COMPLETION = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "reasoning_content": "think"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    "service_tier_of_a_newer_server": "extra fields are kept",
}  # fmt: skip


def test_stream_sync_yields_chunks_and_sends_stream_true() -> None:
    with fake_server([Reply(200, raw=STREAM, content_type="text/event-stream")]) as srv:
        client = OpenRFT(api_key="k", base_url=srv.base_url)
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=5,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    assert chunks[3].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
    sent = json.loads(srv.seen[0].body)
    assert sent == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 5,
        "stream_options": {"include_usage": True},
    }


def test_non_streamed_completion_and_extra_body() -> None:
    with fake_server([Reply(200, COMPLETION)]) as srv:
        client = OpenRFT(api_key="k", base_url=srv.base_url)
        done = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], temperature=0, extra_body={"top_k": 3}
        )
    message = done.choices[0].message
    assert message.content == "Hi" and getattr(message, "reasoning_content", None) == "think"
    assert done.to_dict()["service_tier_of_a_newer_server"] == "extra fields are kept"
    assert json.loads(srv.seen[0].body)["top_k"] == 3 and "stream" not in json.loads(srv.seen[0].body)


def test_error_event_in_stream_raises() -> None:
    raw = _sse(_chunk("a"), {"error": {"message": "engine died", "type": "server_error"}})
    with fake_server([Reply(200, raw=raw, content_type="text/event-stream")]) as srv:
        stream = OpenRFT(api_key="k", base_url=srv.base_url).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(APIError, match="engine died"):
            list(stream)


def test_stream_async() -> None:
    async def run() -> str:
        with fake_server([Reply(200, raw=STREAM, content_type="text/event-stream")]) as srv:
            async with AsyncOpenRFT(api_key="k", base_url=srv.base_url) as client:
                stream = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                async with stream:
                    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == "Hello"
