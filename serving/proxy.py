"""Forward OpenAI requests to the engine that serves the model, streaming SSE through as it arrives.

The public model id (``ft:…``) is rewritten to the engine's adapter name on the way in, and back in the
``"model"`` field of every response body or SSE event on the way out; vLLM's ``reasoning`` key becomes
``reasoning_content`` as the CPU engine writes it, so both backends answer alike. Streams are relayed chunk by chunk
(complete lines only, so a rewrite never straddles a chunk boundary); nothing is buffered beyond a line.
Engine errors become OpenAI-shaped :class:`~serving.errors.ServingError` s.

With ``split_reasoning`` (vLLM without a reasoning parser) the proxy splits ``<think>…</think>`` out of chat
answers itself, with the CPU engine's own splitter: ``reasoning_content`` and ``content`` come out the same
whichever engine served the request. That path parses each body or SSE event as JSON.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from serving.engine.reasoning import ReasoningSplitter, split_reasoning
from serving.engine_client import upstream_error_message
from serving.errors import EngineUnavailableError, ServingError, UpstreamError, openai_error_type

log = logging.getLogger("openrft.serving.proxy")


@dataclass
class ProxyResponse:
    """A complete (non-streamed) engine response, model name already rewritten."""

    status_code: int
    content: bytes
    media_type: str = "application/json"


@dataclass
class ProxyStream:
    """A streamed engine response: iterate ``chunks`` (bytes of SSE); closing it closes the upstream."""

    chunks: AsyncIterator[bytes]
    status_code: int = 200
    media_type: str = "text/event-stream"

    async def aclose(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            await aclose()


Rewrite = Callable[[bytes], bytes]

# vLLM >= 0.11 names the reasoning field "reasoning"; this API (and the CPU engine, and older vLLM) says
# "reasoning_content". Inside a JSON string a quote is always escaped, so this matches keys only.
_REASONING_KEY = re.compile(rb'([{,]\s*)"reasoning"(\s*:)')


def model_rewriter(engine_model: str, public_model: str) -> Rewrite | None:
    """A bytes -> bytes function replacing ``"model":"<engine_model>"`` by the public id (None if equal)."""
    if engine_model == public_model:
        return None
    pattern = re.compile(rb'("model"\s*:\s*)"' + re.escape(json.dumps(engine_model)[1:-1].encode()) + rb'"')
    replacement = json.dumps(public_model).encode()
    return lambda data: pattern.sub(lambda m: m.group(1) + replacement, data)


def response_rewriter(engine_model: str, public_model: str) -> Rewrite:
    """Everything the proxy changes in an engine's JSON or SSE bytes: the model id and the reasoning key."""
    model = model_rewriter(engine_model, public_model)

    def rewrite(data: bytes) -> bytes:
        if b'"reasoning"' in data:
            data = _REASONING_KEY.sub(rb'\1"reasoning_content"\2', data)
        return model(data) if model else data

    return rewrite


def _rename_reasoning(holder: dict[str, Any]) -> None:
    if "reasoning" in holder:
        value = holder.pop("reasoning")
        if holder.get("reasoning_content") is None:
            holder["reasoning_content"] = value


def split_message_reasoning(body: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion: each choice's ``<think>`` block moves to ``message.reasoning_content``."""
    for choice in body.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        _rename_reasoning(message)
        content = message.get("content")
        if isinstance(content, str) and message.get("reasoning_content") is None:
            reasoning, content = split_reasoning(content)
            message["content"] = content
            message["reasoning_content"] = reasoning
    return body


class StreamReasoningSplitter:
    """SSE chat chunks -> the same chunks with ``<think>`` text moved to ``delta.reasoning_content``.

    One splitter per choice index; text a splitter holds back (a possible partial tag) is flushed into the
    chunk that carries the choice's ``finish_reason``, so no text is ever lost or reordered.
    """

    def __init__(self) -> None:
        self._splitters: dict[int, ReasoningSplitter] = {}

    def event(self, data: dict[str, Any]) -> dict[str, Any]:
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
                continue
            delta = choice["delta"]
            _rename_reasoning(delta)
            splitter = self._splitters.setdefault(int(choice.get("index") or 0), ReasoningSplitter())
            content = delta.get("content")
            reasoning, text = splitter.feed(content) if isinstance(content, str) else ("", "")
            if choice.get("finish_reason") is not None:
                more_r, more_c = splitter.finish()
                reasoning, text = reasoning + more_r, text + more_c
            if isinstance(content, str) or text:
                delta["content"] = text
            if reasoning:
                delta["reasoning_content"] = (delta.get("reasoning_content") or "") + reasoning
        return data

    def lines(self, data: bytes) -> bytes:
        """Rewrite the complete SSE lines in ``data`` (non-JSON lines pass through untouched)."""
        out = []
        for line in data.split(b"\n"):
            if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    out.append(line)
                    continue
                if isinstance(event, dict):
                    line = b"data: " + json.dumps(self.event(event), separators=(",", ":")).encode()
            out.append(line)
        return b"\n".join(out)


def _sse_error(error: ServingError) -> bytes:
    return b"data: " + json.dumps(error.to_body()).encode() + b"\n\ndata: [DONE]\n\n"


def upstream_error(response: httpx.Response) -> UpstreamError:
    status = response.status_code
    message = upstream_error_message(response)
    code = "model_not_found" if status == 404 else None
    return UpstreamError(message, status_code=status, type=openai_error_type(status), code=code)


class EngineProxy:
    def __init__(
        self,
        http: httpx.AsyncClient | None = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
    ) -> None:
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            trust_env=False,
        )
        self._own_http = http is None

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def forward(
        self,
        base_url: str,
        path: str,
        body: dict[str, Any],
        *,
        engine_model: str,
        public_model: str,
        split_reasoning: bool = False,
        headers: dict[str, str] | None = None,
    ) -> ProxyResponse | ProxyStream:
        """POST ``body`` (with ``model`` = ``engine_model``) to ``base_url + path``; ``split_reasoning``
        splits ``<think>`` blocks out of chat answers here (see the module docstring)."""
        content = json.dumps({**body, "model": engine_model}).encode()
        request = self._http.build_request(
            "POST",
            base_url.rstrip("/") + path,
            content=content,
            headers={"content-type": "application/json", **(headers or {})},
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                "The inference engine timed out.",
                status_code=504,
                type="timeout_error",
                code="engine_timeout",
            ) from exc
        except httpx.TransportError as exc:
            raise EngineUnavailableError(f"Could not reach the inference engine: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise upstream_error(response)
        rewrite = response_rewriter(engine_model, public_model)
        if "text/event-stream" in response.headers.get("content-type", "") or body.get("stream"):
            if split_reasoning:
                splitter, model_only = StreamReasoningSplitter(), rewrite
                rewrite = lambda data: model_only(splitter.lines(data))  # noqa: E731
            return ProxyStream(self._relay(response, rewrite))
        try:
            data = await response.aread()
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(f"The inference engine dropped the connection: {exc!r}") from exc
        finally:
            await response.aclose()
        if split_reasoning:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                data = json.dumps(split_message_reasoning(parsed)).encode()
        return ProxyResponse(response.status_code, rewrite(data))

    async def _relay(self, response: httpx.Response, rewrite: Rewrite) -> AsyncIterator[bytes]:
        pending = b""
        try:
            async for chunk in response.aiter_bytes():
                pending += chunk
                cut = pending.rfind(b"\n") + 1
                if cut:
                    out, pending = pending[:cut], pending[cut:]
                    yield rewrite(out)
            if pending:
                yield rewrite(pending)
        except httpx.HTTPError as exc:
            log.warning("engine stream broke: %r", exc)
            yield _sse_error(EngineUnavailableError(f"The inference engine dropped the stream: {exc!r}"))
        finally:
            await response.aclose()
