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

    async def main() -> tuple[list[bytes], list[bytes]]:
        proxy = EngineProxy()
        received: list[bytes] = []
        before_gate = 0
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
            # The upstream holds the rest of its stream until the gate opens: the role chunk and the first
            # token must already be here.
            while b'"w0 "' not in b"".join(received):
                received.append(await asyncio.wait_for(chunks.__anext__(), timeout=5))
            before_gate = len(received)
            state.gate.set()
            received.extend([chunk async for chunk in chunks])
        finally:
            await proxy.close()
        return received[:before_gate], received

    early, received = asyncio.run(main())
    assert b'"content":"w0 "' in b"".join(early) and b"w1" not in b"".join(early)
    events = [e for e in b"".join(received).split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [p["choices"][0]["delta"]["content"] for p in payloads[1:]] == ["w0 ", "w1 ", "w2 "]
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
    assert b'"role":"assistant"' in events[0] and b'"content":"w0 "' in events[1]
    assert json.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "engine_unavailable"
    assert events[-1] == b"data: [DONE]"


def _forward(url: str, body: dict[str, object], *, split: bool) -> ProxyResponse | ProxyStream:
    async def main() -> ProxyResponse | ProxyStream:
        proxy = EngineProxy()
        try:
            result = await proxy.forward(
                url,
                "/v1/chat/completions",
                body,
                engine_model=ENGINE,
                public_model=PUBLIC,
                split_reasoning=split,
            )
            if isinstance(result, ProxyStream):
                data = b"".join([chunk async for chunk in result.chunks])
                return ProxyResponse(200, data, "text/event-stream")
            return result
        finally:
            await proxy.close()

    return asyncio.run(main())


def _streamed(data: bytes) -> tuple[str, str, list[dict[str, object]]]:
    events = [
        json.loads(e.removeprefix(b"data: ")) for e in data.split(b"\n\n") if e and e != b"data: [DONE]"
    ]
    reasoning = "".join(str(c["delta"].get("reasoning_content") or "") for e in events for c in e["choices"])
    content = "".join(str(c["delta"].get("content") or "") for e in events for c in e["choices"])
    return reasoning, content, events


def test_think_blocks_have_one_shape_with_or_without_a_vllm_reasoning_parser(
    fake: tuple[FakeState, str],
) -> None:
    """vLLM without a reasoning parser leaves <think> in content; the CPU engine splits it. The proxy makes
    both look like the CPU engine (and like vLLM with a parser, whose 'reasoning' key it renames)."""
    state, url = fake
    shapes = []
    for parser, split in ((None, True), ("deepseek_r1", False)):
        state.reasoning_parser = parser
        try:
            whole = _forward(url, chat("think"), split=split)
            stream = _forward(
                url, chat("think", stream=True, stream_options={"include_usage": True}), split=split
            )
        finally:
            state.reasoning_parser = None
        assert isinstance(whole, ProxyResponse)
        message = json.loads(whole.content)["choices"][0]["message"]
        assert "reasoning" not in message
        reasoning, content, events = _streamed(stream.content)
        assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 7
        shapes.append((message["reasoning_content"], message["content"], reasoning, content))
    assert shapes[0] == shapes[1] == ("r0 r1 ", "w0 w1 w2 ", "r0 r1 ", "w0 w1 w2 ")
    # No think block: reasoning_content is null, as the CPU engine answers.
    plain = _forward(url, chat("x"), split=True)
    assert isinstance(plain, ProxyResponse)
    assert json.loads(plain.content)["choices"][0]["message"]["reasoning_content"] is None


def test_stream_splitter_keeps_partial_tags_and_flushes_at_finish() -> None:
    from serving.proxy import StreamReasoningSplitter

    splitter = StreamReasoningSplitter()
    pieces = ["<thi", "nk>a", "b</th", "ink>\n\nan", "s<"]
    out = []
    for i, piece in enumerate(pieces):
        finish = "stop" if i == len(pieces) - 1 else None
        out.append(
            splitter.event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]})
        )
    deltas = [e["choices"][0]["delta"] for e in out]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "ab"
    assert "".join(d["content"] for d in deltas) == "ans<"
