"""Server-sent events of a streamed response, decoded into models (sync and async)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import pydantic

from openrft._exceptions import APIError, APIResponseValidationError

T = TypeVar("T", bound=pydantic.BaseModel)

__all__ = ["AsyncStream", "SSEDecoder", "ServerSentEvent", "Stream"]


@dataclass(frozen=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """The ``text/event-stream`` framing: fields per line, an event ends at a blank line."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        line = line.rstrip("\r")
        if not line:
            if not self._data and self._event is None:
                return None
            sse = ServerSentEvent("\n".join(self._data), self._event, self._id)
            self._data, self._event = [], None
            return sse
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None

    def flush(self) -> ServerSentEvent | None:
        return self.feed("")


def _decode(sse: ServerSentEvent, item: type[T], response: httpx.Response) -> T:
    try:
        payload: Any = json.loads(sse.data)
    except json.JSONDecodeError as exc:
        raise APIResponseValidationError(
            response, sse.data, f"Invalid JSON in stream: {sse.data[:200]!r}"
        ) from exc
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        raise APIError(str(err.get("message") or "Error in stream."), response.request, body=payload)
    try:
        return item.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise APIResponseValidationError(response, payload, f"Unexpected event in stream: {exc}") from exc


class Stream(Generic[T]):
    """Iterate to get each event as ``T`` until the server's ``[DONE]``; closes the response at the end.
    Use as a context manager to close early."""

    def __init__(self, response: httpx.Response, item: type[T]) -> None:
        self.response = response
        self._item = item
        self._iterator = self._events()

    def _events(self) -> Iterator[T]:
        decoder = SSEDecoder()
        try:
            for line in self.response.iter_lines():
                sse = decoder.feed(line)
                if sse is None:
                    continue
                if sse.data == "[DONE]":
                    return
                yield _decode(sse, self._item, self.response)
            sse = decoder.flush()
            if sse is not None and sse.data != "[DONE]":
                yield _decode(sse, self._item, self.response)
        finally:
            self.response.close()

    def __iter__(self) -> Iterator[T]:
        return self._iterator

    def __next__(self) -> T:
        return next(self._iterator)

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.response.close()


class AsyncStream(Generic[T]):
    def __init__(self, response: httpx.Response, item: type[T]) -> None:
        self.response = response
        self._item = item
        self._iterator = self._events()

    async def _events(self) -> AsyncIterator[T]:
        decoder = SSEDecoder()
        try:
            async for line in self.response.aiter_lines():
                sse = decoder.feed(line)
                if sse is None:
                    continue
                if sse.data == "[DONE]":
                    return
                yield _decode(sse, self._item, self.response)
            sse = decoder.flush()
            if sse is not None and sse.data != "[DONE]":
                yield _decode(sse, self._item, self.response)
        finally:
            await self.response.aclose()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterator

    async def __anext__(self) -> T:
        return await self._iterator.__anext__()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.response.aclose()
