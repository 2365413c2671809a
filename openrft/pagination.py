"""Cursor pages: iterate a page to get every item of every page, fetched lazily with ``after=<last id>``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, Generic, TypeVar

import pydantic

from openrft._models import BaseModel

T = TypeVar("T", bound=BaseModel)

__all__ = ["AsyncCursorPage", "AsyncPaginator", "SyncCursorPage"]


class _Envelope(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    data: list[Any]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


def _cursor(items: list[Any], last_id: str | None) -> str | None:
    if items and isinstance(getattr(items[-1], "id", None), str):
        return str(items[-1].id)
    return last_id


class _Page(Generic[T]):
    data: list[T]
    has_more: bool
    first_id: str | None
    last_id: str | None

    def __init__(self, body: object, item: type[T]) -> None:
        env = _Envelope.model_validate(body)
        self.data = [item.model_validate(x) for x in env.data]
        self.has_more = env.has_more
        self.first_id = env.first_id
        self.last_id = env.last_id

    def has_next_page(self) -> bool:
        return self.has_more and _cursor(self.data, self.last_id) is not None

    @property
    def next_cursor(self) -> str | None:
        return _cursor(self.data, self.last_id) if self.has_more else None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data=[{len(self.data)} items], has_more={self.has_more})"


class SyncCursorPage(_Page[T]):
    """One page; ``for item in page`` walks it and every later page."""

    def __init__(self, body: object, item: type[T], fetch: Callable[[str], SyncCursorPage[T]] | None) -> None:
        super().__init__(body, item)
        self._fetch = fetch

    def get_next_page(self) -> SyncCursorPage[T]:
        cursor = self.next_cursor
        if cursor is None or self._fetch is None:
            raise StopIteration("no more pages")
        return self._fetch(cursor)

    def iter_pages(self) -> Iterator[SyncCursorPage[T]]:
        page: SyncCursorPage[T] = self
        while True:
            yield page
            if not page.has_next_page() or self._fetch is None:
                return
            page = page.get_next_page()

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.data


class AsyncCursorPage(_Page[T]):
    def __init__(
        self, body: object, item: type[T], fetch: Callable[[str], Awaitable[AsyncCursorPage[T]]] | None
    ) -> None:
        super().__init__(body, item)
        self._fetch = fetch

    async def get_next_page(self) -> AsyncCursorPage[T]:
        cursor = self.next_cursor
        if cursor is None or self._fetch is None:
            raise StopAsyncIteration("no more pages")
        return await self._fetch(cursor)

    async def iter_pages(self) -> AsyncIterator[AsyncCursorPage[T]]:
        page: AsyncCursorPage[T] = self
        while True:
            yield page
            if not page.has_next_page() or self._fetch is None:
                return
            page = await page.get_next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.data:
                yield item


class AsyncPaginator(Generic[T]):
    """What an async ``list()`` returns: ``await`` it for the first page, or ``async for`` over all items."""

    def __init__(self, first: Callable[[], Awaitable[AsyncCursorPage[T]]]) -> None:
        self._first = first

    def __await__(self) -> Generator[Any, None, AsyncCursorPage[T]]:
        return self._first().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._first()
        async for item in page:
            yield item
