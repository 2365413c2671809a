"""Chat and text completions carry the fields OpenAI always sends (null or empty where unknown), streamed
or not, whatever the engine left out; what the engine did send is kept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.completion_fields import complete_body, complete_chunk, complete_stream
from serving.proxy import ProxyResponse, ProxyStream

ENGINE_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "tiny-test",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def _chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "tiny-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        **extra,
    }


def test_a_completion_gets_openais_fields():
    body = complete_body(json.loads(json.dumps(ENGINE_REPLY)))
    assert body["system_fingerprint"] is None and body["service_tier"] is None
    message = body["choices"][0]["message"]
    assert message["refusal"] is None and message["annotations"] == []
    assert body["choices"][0]["logprobs"] is None
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "total_tokens": 6,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    sent = {**ENGINE_REPLY, "system_fingerprint": "fp_engine", "usage": {}}
    kept = complete_body(json.loads(json.dumps(sent)))
    assert kept["system_fingerprint"] == "fp_engine" and kept["usage"] is None  # empty usage: unknown
    text = complete_body({"object": "text_completion", "choices": [{"index": 0, "text": "x"}], "usage": None})
    assert text["system_fingerprint"] is None and "service_tier" not in text
    assert complete_body({"error": {"message": "x"}}) == {"error": {"message": "x"}}


def test_chunks_get_openais_fields():
    first = complete_chunk(_chunk({"role": "assistant", "content": ""}), include_usage=True)
    assert first["system_fingerprint"] is None and first["usage"] is None
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    later = complete_chunk(_chunk({"content": "4"}), include_usage=False)
    assert "usage" not in later and later["choices"][0]["delta"] == {"content": "4"}
    last = complete_chunk(
        {
            **_chunk({}),
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
        include_usage=True,
    )
    assert last["usage"]["prompt_tokens_details"] is None


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _sse(*bodies: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(b).encode() + b"\n\n" for b in bodies) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_a_stream_is_rewritten_event_by_event_however_it_is_cut(size):
    raw = _sse(_chunk({"role": "assistant", "content": ""}), _chunk({"content": "4 + 1"}))

    async def collect() -> bytes:
        return b"".join([c async for c in complete_stream(_pieces(raw, size), include_usage=False)])

    events = asyncio.run(collect()).split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    parsed = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert [p["system_fingerprint"] for p in parsed] == [None, None]
    assert parsed[0]["choices"][0]["delta"]["refusal"] is None
    assert parsed[1]["choices"][0]["delta"]["content"] == "4 + 1"


class _FakeServing:
    """Stands in for the engines: answers what an engine without OpenAI's extra fields answers."""

    async def chat_completions(
        self, body: dict[str, Any], *, lookup: Any = None
    ) -> ProxyResponse | ProxyStream:
        if body.get("stream"):
            final = {**_chunk({}), "choices": [], "usage": ENGINE_REPLY["usage"]}
            raw = _sse(_chunk({"role": "assistant", "content": ""}), _chunk({"content": "4"}), final)
            return ProxyStream(_pieces(raw, 5))
        return ProxyResponse(200, json.dumps(ENGINE_REPLY).encode())

    async def close(self) -> None:
        return None


def test_the_official_sdk_sees_the_fields(app_settings, key):
    from openai import OpenAI

    from app.main import create_app

    app = create_app()
    app.state.serving = _FakeServing()
    with TestClient(app) as http:
        sdk = OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
        raw = sdk.chat.completions.with_raw_response.create(
            model="tiny-test", messages=[{"role": "user", "content": "2+2?"}]
        )
        body = json.loads(raw.text)
        assert body["system_fingerprint"] is None
        assert body["choices"][0]["message"]["refusal"] is None
        assert body["choices"][0]["message"]["annotations"] == []
        completion = raw.parse()
        assert completion.choices[0].message.content == "4" and completion.usage.total_tokens == 6
        stream = sdk.chat.completions.create(
            model="tiny-test",
            messages=[{"role": "user", "content": "2+2?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "4"
        assert [c.usage is None for c in chunks] == [True, True, False]
        assert chunks[0].choices[0].delta.refusal is None
