"""``client.models``: base models, fine-tuned models and their checkpoints."""

# ruff: noqa: ASYNC109  (a per-call HTTP timeout, like openai-python; not an asyncio deadline)

from __future__ import annotations

from openrft._base_client import NOT_GIVEN, NotGiven, Timeout
from openrft._resource import AsyncResource, SyncResource, quote_id
from openrft.pagination import AsyncPaginator, SyncCursorPage
from openrft.types.model import Model
from openrft.types.model_deleted import ModelDeleted

__all__ = ["AsyncModels", "Models"]


def _path(model: str) -> str:
    return f"/models/{quote_id(model, safe=':/')}"


class Models(SyncResource):
    def list(self, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> SyncCursorPage[Model]:
        return self._list("/models", Model, {}, timeout=timeout)

    def retrieve(self, model: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> Model:
        return self._client.get(_path(model), Model, timeout=timeout)

    def delete(self, model: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> ModelDeleted:
        """Delete a fine-tuned model (base models cannot be deleted)."""
        return self._client.delete(_path(model), ModelDeleted, timeout=timeout)


class AsyncModels(AsyncResource):
    def list(self, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> AsyncPaginator[Model]:
        return self._list("/models", Model, {}, timeout=timeout)

    async def retrieve(self, model: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> Model:
        return await self._client.get(_path(model), Model, timeout=timeout)

    async def delete(self, model: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> ModelDeleted:
        return await self._client.delete(_path(model), ModelDeleted, timeout=timeout)
