from __future__ import annotations

from functools import cached_property

from openrft._resource import AsyncResource, SyncResource
from openrft.resources.chat.completions import AsyncCompletions, Completions

__all__ = ["AsyncChat", "Chat"]


class Chat(SyncResource):
    @cached_property
    def completions(self) -> Completions:
        return Completions(self._client)


class AsyncChat(AsyncResource):
    @cached_property
    def completions(self) -> AsyncCompletions:
        return AsyncCompletions(self._client)
