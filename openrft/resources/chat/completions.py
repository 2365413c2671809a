"""``client.chat.completions.create``: a whole completion, or with ``stream=True`` an iterator of chunks."""

# ruff: noqa: ASYNC109  (a per-call HTTP timeout, like openai-python; not an asyncio deadline)

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

from openrft._base_client import NOT_GIVEN, NotGiven, Timeout, make_options, parse_model
from openrft._resource import AsyncResource, SyncResource
from openrft._streaming import AsyncStream, Stream
from openrft.types.chat_completion import ChatCompletion
from openrft.types.chat_completion_chunk import ChatCompletionChunk

__all__ = ["AsyncCompletions", "Completions"]

Message = Mapping[str, Any]


def _body(
    model: str,
    messages: Iterable[Message],
    stream: bool,
    sampling: Mapping[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    if stream:
        body["stream"] = True
    body.update({k: v for k, v in sampling.items() if v is not None})
    return body


class Completions(SyncResource):
    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[Message],
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> ChatCompletion: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[Message],
        stream: Literal[True],
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> Stream[ChatCompletionChunk]: ...

    def create(
        self,
        *,
        model: str,
        messages: Iterable[Message],
        stream: bool = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        sampling = {
            "max_tokens": max_tokens,
            "max_completion_tokens": max_completion_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "n": n,
            "stop": stop,
            "seed": seed,
            "stream_options": dict(stream_options) if stream_options else None,
        }
        options = make_options(
            "POST",
            "/chat/completions",
            body=_body(model, messages, stream, sampling),
            extra_body=extra_body,
            extra_headers={"accept": "text/event-stream"} if stream else None,
            timeout=timeout,
            stream=stream,
        )
        response = self._client.request(options)
        if stream:
            return Stream(response, ChatCompletionChunk)
        return parse_model(response, ChatCompletion)


class AsyncCompletions(AsyncResource):
    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Message],
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Message],
        stream: Literal[True],
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> AsyncStream[ChatCompletionChunk]: ...

    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Message],
        stream: bool = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        sampling = {
            "max_tokens": max_tokens,
            "max_completion_tokens": max_completion_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "n": n,
            "stop": stop,
            "seed": seed,
            "stream_options": dict(stream_options) if stream_options else None,
        }
        options = make_options(
            "POST",
            "/chat/completions",
            body=_body(model, messages, stream, sampling),
            extra_body=extra_body,
            extra_headers={"accept": "text/event-stream"} if stream else None,
            timeout=timeout,
            stream=stream,
        )
        response = await self._client.request(options)
        if stream:
            return AsyncStream(response, ChatCompletionChunk)
        return parse_model(response, ChatCompletion)
