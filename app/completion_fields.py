"""The fields OpenAI always sends in completion objects, added where an engine leaves them out.

Engines (the CPU engine, vLLM) answer with most of OpenAI's shape; clients that read ``system_fingerprint``,
``message.refusal``, ``message.annotations`` or the usage details as keys (not through the SDK's defaults)
need them present. Unknown values are null (or an empty list): nothing is made up, and a field an engine
does send is kept as it is.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any


def _common(body: dict[str, Any]) -> None:
    body.setdefault("system_fingerprint", None)
    if body.get("object") in ("chat.completion", "chat.completion.chunk"):
        body.setdefault("service_tier", None)


def _usage(usage: Any) -> Any:
    if not isinstance(usage, dict) or not usage:
        return None
    usage.setdefault("prompt_tokens_details", None)
    usage.setdefault("completion_tokens_details", None)
    return usage


def complete_body(body: Any) -> Any:
    """A non-streamed chat or text completion, with OpenAI's fields."""
    if not isinstance(body, dict) or body.get("object") not in ("chat.completion", "text_completion"):
        return body
    _common(body)
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        choice.setdefault("logprobs", None)
        message = choice.get("message")
        if isinstance(message, dict):
            message.setdefault("refusal", None)
            message.setdefault("annotations", [])
    if "usage" in body or body.get("object") == "chat.completion":
        body["usage"] = _usage(body.get("usage"))
    return body


def complete_chunk(body: Any, *, include_usage: bool) -> Any:
    """One streamed chunk; with ``stream_options.include_usage`` every chunk has ``usage`` (null until the
    last), as OpenAI's stream does."""
    if not isinstance(body, dict) or body.get("object") not in ("chat.completion.chunk", "text_completion"):
        return body
    _common(body)
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        choice.setdefault("logprobs", None)
        delta = choice.get("delta")
        if isinstance(delta, dict) and "role" in delta:
            delta.setdefault("refusal", None)
    if include_usage or "usage" in body:
        body["usage"] = _usage(body.get("usage"))
    return body


def _rewrite_event(event: bytes, include_usage: bool) -> bytes:
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            body = json.loads(payload)
        except ValueError:
            continue  # not ours to fix
        fixed = complete_chunk(body, include_usage=include_usage)
        lines[i] = b"data: " + json.dumps(fixed, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\n".join(lines)


async def complete_stream(chunks: AsyncIterator[bytes], *, include_usage: bool) -> AsyncIterator[bytes]:
    """Server-sent events with each chunk completed; events are re-cut on their blank-line boundaries, so
    an event split across reads is rewritten whole."""
    buffer = b""
    try:
        async for data in chunks:
            buffer += data
            while True:
                end = buffer.find(b"\n\n")
                if end < 0:
                    break
                event, buffer = buffer[:end], buffer[end + 2 :]
                yield _rewrite_event(event, include_usage) + b"\n\n"
        if buffer:
            yield _rewrite_event(buffer, include_usage)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
