"""The proxy against a fake vLLM upstream: model rewriting, chunk-by-chunk streaming, error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from serving.errors import EngineUnavailableError, UpstreamError
from serving.proxy import EngineProxy, ProxyResponse, ProxyStream, model_rewriter, response_rewriter
from serving.supervisor import free_port
from tests.serving.fake_vllm import FakeState, create_fake_vllm
from tests.serving.helpers import ThreadedServer

PUBLIC = "ft:smollm2-135m-instruct:org-1:demo:ftjob-abc"
ENGINE = "lora-demo-123"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeState, str]]:
    state = FakeState("base", loras={ENGINE: "/adapters/demo"})
    with ThreadedServer(create_fake_vllm(state)) as server:
        yield state, server.url


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": PUBLIC, "messages": [{"role": "user", "content": content}], "max_tokens": 3, **extra}


def test_rewriter_only_touches_the_model_field() -> None:
    rewrite = model_rewriter(ENGINE, PUBLIC)
    assert rewrite is not None
    data = b'{"model":"lora-demo-123","x":"lora-demo-123"}\n{"model" : "lora-demo-123"}'
    assert (
        rewrite(data)
        == b'{"model":"' + PUBLIC.encode() + b'","x":"lora-demo-123"}\n{"model" : "' + PUBLIC.encode() + b'"}'
    )
    assert model_rewriter("same", "same") is None


def test_reasoning_key_is_renamed_but_text_is_not() -> None:
    rewrite = response_rewriter("m", "m")
    data = b'{"delta":{"reasoning":"say \\"reasoning\\": x","content":null}, "reasoning" : "y"}'
    out = rewrite(data)
    assert (
        out
        == b'{"delta":{"reasoning_content":"say \\"reasoning\\": x","content":null}, "reasoning_content" : "y"}'
    )
    assert json.loads(out)["delta"]["reasoning_content"] == 'say "reasoning": x'


def test_plain_request_rewrites_model_both_ways(fake: tuple[FakeState, str]) -> None:
    state, url = fake

    async def main() -> ProxyResponse | ProxyStream:
        proxy = EngineProxy()
        try:
            return await proxy.forward(
                url, "/v1/chat/completions", chat("hi"), engine_model=ENGINE, public_model=PUBLIC
            )
        finally:
            await proxy.close()

    result = asyncio.run(main())
    assert isinstance(result, ProxyResponse) and result.status_code == 200
    body = json.loads(result.content)
    assert body["model"] == PUBLIC and body["choices"][0]["message"]["content"] == "w0 w1 w2 "
    assert state.requests[-1]["model"] == ENGINE


def test_stream_is_relayed_chunk_by_chunk(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.gate.clear()

    async def main() -> list[bytes]:
        proxy = EngineProxy()
        received: list[bytes] = []
        try:
            result = await proxy.forward(
                url,
                "/v1/chat/completions",
                chat("gate", stream=True),
                engine_model=ENGINE,
                public_model=PUBLIC,
            )
            assert isinstance(result, ProxyStream)
            chunks = result.chunks.__aiter__()
            # The upstream holds the rest of its stream until the gate opens: the first event must already be here.
            received.append(await asyncio.wait_for(chunks.__anext__(), timeout=5))
            state.gate.set()
            received.extend([chunk async for chunk in chunks])
        finally:
            await proxy.close()
        return received

    received = asyncio.run(main())
    assert b'"content":"w0 "' in received[0] and b"w1" not in received[0]
    events = [e for e in b"".join(received).split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert [p["choices"][0]["delta"]["content"] for p in payloads] == ["w0 ", "w1 ", "w2 "]
    assert {p["model"] for p in payloads} == {PUBLIC}


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        (
            {"model": "unknown-lora", "messages": [{"role": "user", "content": "x"}]},
            404,
            "invalid_request_error",
            "does not exist",
        ),
        (chat("fail"), 500, "server_error", "engine exploded"),
    ],
)
def test_upstream_errors_become_openai_errors(
    fake: tuple[FakeState, str], body: dict[str, object], status: int, kind: str, message: str
) -> None:
    _, url = fake

    async def main() -> None:
        proxy = EngineProxy()
        try:
            await proxy.forward(
                url,
                "/v1/chat/completions",
                body,
                engine_model=ENGINE if body["model"] == PUBLIC else str(body["model"]),
                public_model="m",
            )
        finally:
            await proxy.close()

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(main())
    error = caught.value
    assert error.status_code == status
    assert error.to_body()["error"]["type"] == kind and message in error.message


def test_unreachable_engine_and_broken_stream(fake: tuple[FakeState, str]) -> None:
    _, url = fake

    async def unreachable() -> None:
        proxy = EngineProxy()
        try:
            await proxy.forward(
                f"http://127.0.0.1:{free_port()}",
                "/v1/chat/completions",
                chat("x"),
                engine_model=ENGINE,
                public_model=PUBLIC,
            )
        finally:
            await proxy.close()

    with pytest.raises(EngineUnavailableError):
        asyncio.run(unreachable())

    async def broken() -> bytes:
        proxy = EngineProxy()
        try:
            result = await proxy.forward(
                url,
                "/v1/chat/completions",
                chat("break", stream=True),
                engine_model=ENGINE,
                public_model=PUBLIC,
            )
            assert isinstance(result, ProxyStream)
            return b"".join([chunk async for chunk in result.chunks])
        finally:
            await proxy.close()

    data = asyncio.run(broken())
    events = [e for e in data.split(b"\n\n") if e]
    assert b'"content":"w0 "' in events[0]
    assert json.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "engine_unavailable"
    assert events[-1] == b"data: [DONE]"
