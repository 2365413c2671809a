"""``client.models``: the SDK's resource, its models parsed with their ``parent`` and ``root`` (a fine-tuned
model or checkpoint names the model it was trained from). Delete is the SDK's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openai.pagination import AsyncPage, SyncPage
from openai.resources import models as sdk
from typing_extensions import Unpack

from openrft._request import RequestExtras, path_id, request_options
from openrft.types.model import Model

if TYPE_CHECKING:
    from openai._base_client import AsyncPaginator

__all__ = ["AsyncModels", "Models"]


def _path(model: str) -> str:
    return f"/models/{path_id(model, safe=':/')}"


class Models(sdk.Models):
    def list(self, **extras: Unpack[RequestExtras]) -> SyncPage[Model]:  # type: ignore[override]  # see jobs.list
        return self._get_api_list(
            "/models", page=SyncPage[Model], options=request_options(extras), model=Model
        )

    def retrieve(self, model: str, **extras: Unpack[RequestExtras]) -> Model:
        return self._get(_path(model), options=request_options(extras), cast_to=Model)


class AsyncModels(sdk.AsyncModels):
    def list(  # type: ignore[override]
        self, **extras: Unpack[RequestExtras]
    ) -> AsyncPaginator[Model, AsyncPage[Model]]:
        return self._get_api_list(
            "/models", page=AsyncPage[Model], options=request_options(extras), model=Model
        )

    async def retrieve(self, model: str, **extras: Unpack[RequestExtras]) -> Model:
        return await self._get(_path(model), options=request_options(extras), cast_to=Model)
