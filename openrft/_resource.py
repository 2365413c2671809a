from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from openrft._base_client import AsyncAPIClient, SyncAPIClient, make_options
from openrft._models import BaseModel
from openrft.pagination import AsyncCursorPage, AsyncPaginator, SyncCursorPage

T = TypeVar("T", bound=BaseModel)


class SyncResource:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def _list(self, path: str, item: type[T], params: Mapping[str, Any], **kw: Any) -> SyncCursorPage[T]:
        def fetch(after: str | None) -> SyncCursorPage[T]:
            query = {**params, "after": after} if after else dict(params)
            response = self._client.request(make_options("GET", path, params=query, **kw))
            return SyncCursorPage(response.json(), item, fetch)

        return fetch(params.get("after"))


class AsyncResource:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    def _list(self, path: str, item: type[T], params: Mapping[str, Any], **kw: Any) -> AsyncPaginator[T]:
        async def fetch(after: str | None) -> AsyncCursorPage[T]:
            query = {**params, "after": after} if after else dict(params)
            response = await self._client.request(make_options("GET", path, params=query, **kw))
            return AsyncCursorPage(response.json(), item, fetch)

        first: Callable[[], Awaitable[AsyncCursorPage[T]]] = lambda: fetch(params.get("after"))  # noqa: E731
        return AsyncPaginator(first)


def quote_id(ident: str, safe: str = "") -> str:
    """An id as one URL path segment (model names keep ``:`` and ``/``, which the server's routes accept)."""
    from urllib.parse import quote

    return quote(ident, safe=safe)
