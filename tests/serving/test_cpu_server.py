"""The CPU engine's HTTP server: OpenAI SDK calls (plain and streamed), adapter endpoints, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serving.cpu_server.router import create_app
from serving.cpu_server.serving import EngineServer
from serving.engine.engine import RequestDone, SequenceDelta
from tests.serving.helpers import ThreadedServer


@pytest.fixture(scope="module")
def server(engine: Any) -> Iterator[ThreadedServer]:
    app = create_app(EngineServer(engine, served_model_name="tiny", model_root="/models/tiny"))
    with ThreadedServer(app) as running:
        yield running


@pytest.fixture
def client(server: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 + 7?"}]


def test_models_lists_base_and_adapters(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"tiny", "qv", "all"}
    assert models["qv"].model_extra and models["qv"].model_extra["parent"] == "tiny"


@pytest.mark.parametrize("model", ["tiny", "all"])
def test_chat_plain_and_streamed_agree(client: openai.OpenAI, model: str) -> None:
    plain = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert plain.object == "chat.completion" and plain.model == model
    choice = plain.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.role == "assistant"
    assert plain.usage is not None and plain.usage.completion_tokens <= 12
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

    stream = client.chat.completions.create(
        model=model,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    )


def test_adapter_output_differs_from_base(client: openai.OpenAI) -> None:
    def answer(model: str) -> str | None:
        r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=10, temperature=0)  # type: ignore[arg-type]
        return r.choices[0].message.content

    assert answer("tiny") != answer("all")


def test_n_seed_stop_and_max_completion_tokens(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="qv",
        messages=MESSAGES,
        n=3,
        seed=3,
        temperature=1.0,
        max_completion_tokens=8,  # type: ignore[arg-type]
    )
    again = client.chat.completions.create(
        model="qv",
        messages=MESSAGES,
        n=3,
        seed=3,
        temperature=1.0,
        max_completion_tokens=8,  # type: ignore[arg-type]
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    greedy = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=20,
        temperature=0,
        extra_body={"ignore_eos": True},  # type: ignore[arg-type]
    )
    text = greedy.choices[0].message.content or ""
    stop = text[5:8]
    cut = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=20,
        temperature=0,
        stop=[stop],
        extra_body={"ignore_eos": True},  # type: ignore[arg-type]
    )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_completions_plain_stream_and_multi_prompt(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model="tiny",
        prompt=["The sun", "Water"],
        max_tokens=6,
        temperature=0,
        n=2,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[0].text != r.choices[2].text
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens == 4 * 6
    stream = client.completions.create(
        model="tiny", prompt="The sun", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == r.choices[0].text
    echo = client.completions.create(model="tiny", prompt="The sun", max_tokens=3, temperature=0, echo=True)
    assert echo.choices[0].text.startswith("The sun")


def test_errors_are_vllm_shaped(client: openai.OpenAI, server: ThreadedServer) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert not_found.value.body == {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, logprobs=True)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=100_000)  # type: ignore[arg-type]
    bad = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"


def test_load_and_unload_endpoints(
    server: ThreadedServer, adapter_dirs: dict[str, Path], client: openai.OpenAI
) -> None:
    url = server.url + "/v1"
    body = {"lora_name": "runtime", "lora_path": str(adapter_dirs["all"])}
    ok = httpx.post(url + "/load_lora_adapter", json=body)
    assert ok.status_code == 200 and "added successfully" in ok.text
    again = httpx.post(url + "/load_lora_adapter", json=body)
    assert again.status_code == 400 and "already been loaded" in again.json()["error"]["message"]
    missing = httpx.post(url + "/load_lora_adapter", json={"lora_name": "x", "lora_path": "/no/such/dir"})
    assert missing.status_code == 404 and "No adapter found" in missing.json()["error"]["message"]
    r = client.chat.completions.create(model="runtime", messages=MESSAGES, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    expected = client.chat.completions.create(model="all", messages=MESSAGES, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert r.choices[0].message.content == expected.choices[0].message.content and r.model == "runtime"
    # load_inplace (as vLLM): the same name now serves other weights.
    swap = httpx.post(
        url + "/load_lora_adapter", json={**body, "lora_path": str(adapter_dirs["qv"]), "load_inplace": True}
    )
    assert swap.status_code == 200
    r = client.chat.completions.create(model="runtime", messages=MESSAGES, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    expected = client.chat.completions.create(model="qv", messages=MESSAGES, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert r.choices[0].message.content == expected.choices[0].message.content
    gone = httpx.post(url + "/unload_lora_adapter", json={"lora_name": "runtime"})
    assert gone.status_code == 200 and "removed successfully" in gone.text
    assert httpx.post(url + "/unload_lora_adapter", json={"lora_name": "runtime"}).status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="runtime", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]


# -- the reasoning split, with a scripted engine (the tiny model does not write <think> blocks) -----------


class _Adapters:
    def is_registered(self, name: str) -> bool:
        return False

    def infos(self) -> list[Any]:
        return []


@dataclass
class ScriptedEngine:
    tokenizer: Any
    deltas: list[str]
    max_model_len: int = 2048
    alive: bool = True

    def __post_init__(self) -> None:
        self.adapters = _Adapters()

    def validate(self, *args: Any) -> None:
        return None

    async def generate(
        self, prompt_ids: list[int], params: Any, lora: str | None = None
    ) -> AsyncIterator[Any]:
        for i, text in enumerate(self.deltas):
            await asyncio.sleep(0)
            last = i == len(self.deltas) - 1
            yield SequenceDelta(0, text, [i], "stop" if last else None)
        yield RequestDone(len(prompt_ids), len(self.deltas))


def test_reasoning_goes_to_reasoning_content(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    deltas = ["<th", "ink>12 + 7", " = 19</th", "ink>\n\nThe answer", " is 19."]
    engine = ScriptedEngine(tokenizer, deltas)
    app = create_app(EngineServer(engine, served_model_name="tiny", model_root="x"))  # type: ignore[arg-type]
    with ThreadedServer(app) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        plain = client.chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
        message = plain.choices[0].message
        assert message.content == "The answer is 19."
        assert message.model_extra and message.model_extra["reasoning_content"] == "12 + 7 = 19"
        chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
        deltas_out = [c.choices[0].delta for c in chunks if c.choices]
        content = "".join(d.content or "" for d in deltas_out)
        reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas_out)
        assert (reasoning, content) == ("12 + 7 = 19", "The answer is 19.")
        assert not any("<think>" in (d.content or "") for d in deltas_out)


@dataclass
class FailingEngine(ScriptedEngine):
    """Writes one delta, then fails the request the way an engine can once the stream has started."""

    error: Exception = field(default_factory=lambda: RuntimeError("boom"))

    async def generate(
        self, prompt_ids: list[int], params: Any, lora: str | None = None
    ) -> AsyncIterator[Any]:
        yield SequenceDelta(0, "partial", [1], None)
        raise self.error


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_both_streams_end_an_error_the_same_way(tiny_model_dir: Path, path: str) -> None:
    """Chat and text completions share one SSE path: an EngineHTTPError mid-stream keeps its status in the
    error event (the completion stream used to report every error as a 500), and [DONE] still follows."""
    from transformers import AutoTokenizer

    from serving.cpu_server.protocol import EngineHTTPError

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    body: dict[str, Any] = {"model": "tiny", "stream": True}
    body |= {"messages": MESSAGES} if "chat" in path else {"prompt": "12 + 7 ="}
    for error, status, kind in (
        (EngineHTTPError(400, "too long"), 400, "BadRequestError"),
        (RuntimeError("boom"), 500, "InternalServerError"),
    ):
        engine = FailingEngine(tokenizer, [], error=error)
        app = create_app(EngineServer(engine, served_model_name="tiny", model_root="x"))  # type: ignore[arg-type]
        with ThreadedServer(app) as srv:
            events = httpx.post(srv.url + path, json=body, timeout=30).text.split("\n\n")
        frames = [e.removeprefix("data: ") for e in events if e]
        assert frames[-1] == "[DONE]" and "partial" in "".join(frames[:-2])
        assert f'"type":"{kind}","code":{status}' in frames[-2]


SCORE_SCHEMA = {
    "type": "object",
    "properties": {
        "result": {"type": "number", "minimum": 0, "maximum": 1},
        "why": {"type": "string", "maxLength": 12},
    },
    "required": ["result", "why"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_parses_and_follows_the_schema(client: openai.OpenAI, stream: bool) -> None:
    """The tiny model, random weights and all, answers a json_schema request with JSON of that schema:
    constrained decoding, not the model, makes it parse."""
    import json

    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "score", "strict": True, "schema": SCORE_SCHEMA}}
    texts = []
    for seed in range(3):
        kwargs: dict[str, Any] = dict(
            model="tiny", messages=MESSAGES, max_tokens=200, temperature=1.0, seed=seed, response_format=fmt
        )
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **kwargs))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        else:
            r = client.chat.completions.create(**kwargs)
            text, finish = r.choices[0].message.content or "", [r.choices[0].finish_reason]
        # maxLength bounds the string, so the grammar ends well within max_tokens: a whole answer each time.
        assert finish == ["stop"], text
        jsonschema.validate(json.loads(text), SCORE_SCHEMA)
        texts.append(text)
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, temperature=0)  # type: ignore[arg-type]
    assert not (plain.choices[0].message.content or "").startswith('{"result"')


def test_json_object_and_bad_schemas(client: openai.OpenAI) -> None:
    import json

    r = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=300,
        temperature=0,
        response_format={"type": "json_object"},
    )
    text = r.choices[0].message.content or ""
    assert text.startswith("{")
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}
    with pytest.raises(openai.BadRequestError, match="strin") as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, response_format=bad)  # type: ignore[arg-type]
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, response_format={"type": "xml"})  # type: ignore[arg-type]


def test_an_engine_started_with_a_key_answers_only_its_holder(engine: Any) -> None:
    """The supervisor starts each engine with a secret: anything else on the machine gets 401 from every route
    (models, chat, adapter loads), and /health stays open for the start-up probe."""
    app = create_app(
        EngineServer(engine, served_model_name="tiny", model_root="/models/tiny"), api_key="s3cret"
    )
    with ThreadedServer(app) as running:
        assert httpx.get(running.url + "/health").status_code == 200
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("POST", "/v1/chat/completions", {"model": "tiny", "messages": MESSAGES}),
            ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/etc"}),
        ):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = httpx.request(method, running.url + path, json=body, headers=headers)
                assert refused.status_code == 401, (path, refused.text)
        holder = openai.OpenAI(base_url=running.url + "/v1", api_key="s3cret", max_retries=0)
        assert {m.id for m in holder.models.list()} >= {"tiny"}
