"""``OpenRFT`` and ``AsyncOpenRFT``: the entry points, in the openai-python style.

client = OpenRFT()  # OPENRFT_API_KEY / OPENRFT_BASE_URL, or the embedded service's key file
f = client.files.create("train.jsonl", validate="reinforcement")
job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=f.id, grader={...})
job = client.fine_tuning.jobs.follow(job.id)
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

import httpx

from openrft._base_client import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, AsyncAPIClient, SyncAPIClient, Timeout
from openrft.resources.chat import AsyncChat, Chat
from openrft.resources.files import AsyncFiles, Files
from openrft.resources.fine_tuning import AsyncFineTuning, FineTuning
from openrft.resources.graders import AsyncGraders, Graders
from openrft.resources.models import AsyncModels, Models

__all__ = ["AsyncOpenRFT", "OpenRFT"]


class OpenRFT(SyncAPIClient):
    """Synchronous client. ``max_retries`` retries connection errors, 408, 409, 429 and 5xx with backoff."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            http_client=http_client,
        )

    @cached_property
    def files(self) -> Files:
        return Files(self)

    @cached_property
    def fine_tuning(self) -> FineTuning:
        return FineTuning(self)

    @cached_property
    def graders(self) -> Graders:
        return Graders(self)

    @cached_property
    def models(self) -> Models:
        return Models(self)

    @cached_property
    def chat(self) -> Chat:
        return Chat(self)

    def __enter__(self) -> OpenRFT:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncOpenRFT(AsyncAPIClient):
    """Asynchronous twin of :class:`OpenRFT` (same resources; list methods return async paginators)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            http_client=http_client,
        )

    @cached_property
    def files(self) -> AsyncFiles:
        return AsyncFiles(self)

    @cached_property
    def fine_tuning(self) -> AsyncFineTuning:
        return AsyncFineTuning(self)

    @cached_property
    def graders(self) -> AsyncGraders:
        return AsyncGraders(self)

    @cached_property
    def models(self) -> AsyncModels:
        return AsyncModels(self)

    @cached_property
    def chat(self) -> AsyncChat:
        return AsyncChat(self)

    async def __aenter__(self) -> AsyncOpenRFT:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
