"""The HTTP core shared by every resource: building requests, retries with backoff, and turning error
responses into typed exceptions. One sync and one async implementation of the same loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pydantic

from openrft._config import resolve_api_key, resolve_base_url
from openrft._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    status_error,
)
from openrft._retry import retry_delay, should_retry
from openrft._version import __version__

M = TypeVar("M", bound=pydantic.BaseModel)

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2


class NotGiven:
    """Marks an argument that was not passed (distinct from an explicit ``None``, which disables a timeout)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()
Timeout = float | httpx.Timeout | None
FilesFactory = Callable[[ExitStack], Mapping[str, Any]]


@dataclass(frozen=True)
class RequestOptions:
    """One API call. ``files`` is a factory called once per attempt, so a retried upload re-reads its
    source from the start; handles it opens are registered on the given stack and closed after the attempt."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    files: FilesFactory | None = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: Timeout | NotGiven = NOT_GIVEN
    stream: bool = False


def make_options(
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
    files: FilesFactory | None = None,
    data: Mapping[str, str] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_query: Mapping[str, Any] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    timeout: Timeout | NotGiven = NOT_GIVEN,
    stream: bool = False,
) -> RequestOptions:
    """Options with the per-call extras merged in (``extra_body`` keys override the body's)."""
    query = {k: v for k, v in {**(params or {}), **(extra_query or {})}.items() if v is not None}
    json_body: Any = None
    if body is not None or extra_body:
        json_body = {**{k: v for k, v in (body or {}).items() if v is not None}, **(extra_body or {})}
    return RequestOptions(
        method=method,
        path=path,
        params=query or None,
        json=json_body,
        files=files,
        data=data,
        headers=dict(extra_headers or {}),
        timeout=timeout,
        stream=stream,
    )


def decode_body(response: httpx.Response) -> object | None:
    """The JSON body if it is JSON, else the text (or None when empty)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def parse_model(response: httpx.Response, cast_to: type[M]) -> M:
    body = decode_body(response)
    try:
        return cast_to.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise APIResponseValidationError(
            response,
            body,
            f"Unexpected response shape from {response.request.url.path}: {where}: {first['msg']}",
        ) from exc


class BaseClient:
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: Timeout,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.max_retries = max_retries
        self._default_headers = dict(default_headers or {})

    def _headers(self, options: RequestOptions, retries_taken: int) -> dict[str, str]:
        headers = {
            "authorization": f"Bearer {self.api_key}",
            "accept": "application/json",
            "user-agent": f"openrft-python/{__version__}",
            **self._default_headers,
            **options.headers,
        }
        if retries_taken:
            headers["x-openrft-retry-count"] = str(retries_taken)
        return headers

    def _url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def _timeout(self, options: RequestOptions) -> Timeout:
        return self.timeout if isinstance(options.timeout, NotGiven) else options.timeout

    def _build(
        self,
        client: httpx.Client | httpx.AsyncClient,
        options: RequestOptions,
        stack: ExitStack,
        retries: int,
    ) -> httpx.Request:
        return client.build_request(
            options.method,
            self._url(options.path),
            params=options.params,
            json=options.json,
            files=options.files(stack) if options.files else None,
            data=options.data,
            headers=self._headers(options, retries),
            timeout=self._timeout(options),
        )


class SyncAPIClient(BaseClient):
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: Timeout,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
        http_client: httpx.Client | None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
        )
        self._client = http_client or httpx.Client(timeout=timeout, follow_redirects=True)

    def request(self, options: RequestOptions) -> httpx.Response:
        """Send with retries; returns a successful response (unread when ``options.stream``) or raises."""
        retries = 0
        while True:
            with ExitStack() as stack:
                request = self._build(self._client, options, stack, retries)
                try:
                    response = self._client.send(request, stream=options.stream)
                except httpx.TimeoutException as exc:
                    if retries < self.max_retries:
                        time.sleep(retry_delay(retries))
                        retries += 1
                        continue
                    raise APITimeoutError(request) from exc
                except httpx.TransportError as exc:
                    if retries < self.max_retries:
                        time.sleep(retry_delay(retries))
                        retries += 1
                        continue
                    raise APIConnectionError(request) from exc
            if response.is_success:
                return response
            if retries < self.max_retries and should_retry(response):
                response.close()
                time.sleep(retry_delay(retries, response.headers))
                retries += 1
                continue
            response.read()
            raise status_error(response, decode_body(response))

    def get(self, path: str, cast_to: type[M], **kw: Any) -> M:
        return parse_model(self.request(make_options("GET", path, **kw)), cast_to)

    def post(self, path: str, cast_to: type[M], **kw: Any) -> M:
        return parse_model(self.request(make_options("POST", path, **kw)), cast_to)

    def delete(self, path: str, cast_to: type[M], **kw: Any) -> M:
        return parse_model(self.request(make_options("DELETE", path, **kw)), cast_to)

    def close(self) -> None:
        self._client.close()


class AsyncAPIClient(BaseClient):
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: Timeout,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
        http_client: httpx.AsyncClient | None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
        )
        self._client = http_client or httpx.AsyncClient(timeout=timeout, follow_redirects=True)

    async def request(self, options: RequestOptions) -> httpx.Response:
        retries = 0
        while True:
            with ExitStack() as stack:
                request = self._build(self._client, options, stack, retries)
                try:
                    response = await self._client.send(request, stream=options.stream)
                except httpx.TimeoutException as exc:
                    if retries < self.max_retries:
                        await asyncio.sleep(retry_delay(retries))
                        retries += 1
                        continue
                    raise APITimeoutError(request) from exc
                except httpx.TransportError as exc:
                    if retries < self.max_retries:
                        await asyncio.sleep(retry_delay(retries))
                        retries += 1
                        continue
                    raise APIConnectionError(request) from exc
            if response.is_success:
                return response
            if retries < self.max_retries and should_retry(response):
                await response.aclose()
                await asyncio.sleep(retry_delay(retries, response.headers))
                retries += 1
                continue
            await response.aread()
            raise status_error(response, decode_body(response))

    async def get(self, path: str, cast_to: type[M], **kw: Any) -> M:
        return parse_model(await self.request(make_options("GET", path, **kw)), cast_to)

    async def post(self, path: str, cast_to: type[M], **kw: Any) -> M:
        return parse_model(await self.request(make_options("POST", path, **kw)), cast_to)

    async def delete(self, path: str, cast_to: type[M], **kw: Any) -> M:
        return parse_model(await self.request(make_options("DELETE", path, **kw)), cast_to)

    async def close(self) -> None:
        await self._client.aclose()
