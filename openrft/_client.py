"""``OpenRFT`` and ``AsyncOpenRFT``: the official SDK's ``OpenAI`` / ``AsyncOpenAI``, pointed at this service.

client = OpenRFT()  # OPENRFT_API_KEY / OPENRFT_BASE_URL, or the embedded service's key file
f = client.files.create("train.jsonl", validate="reinforcement")
job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=f.id, grader={...}, icl_k=3)
job = client.fine_tuning.jobs.follow(job.id)

Everything of the SDK works as it does against OpenAI (retries, streaming, paging, errors, ``with_raw_response``,
``with_options``); the subclass adds where the key and URL come from, typed OpenRFT options on jobs, ``follow`` /
``wait``, local file checks, and the service's extra fields on jobs and models.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from openai import DEFAULT_MAX_RETRIES, AsyncOpenAI, NotGiven, OpenAI, Timeout, not_given

from openrft._config import resolve_api_key, resolve_base_url
from openrft.resources.files import AsyncFiles, Files
from openrft.resources.fine_tuning import AsyncFineTuning, FineTuning
from openrft.resources.models import AsyncModels, Models

if TYPE_CHECKING:
    import httpx2
    from openai.resources.fine_tuning.alpha import AsyncGraders, Graders

__all__ = ["AsyncOpenRFT", "OpenRFT"]


class OpenRFT(OpenAI):
    """Synchronous client. The key is ``api_key``, else ``$OPENRFT_API_KEY``, else ``$OPENRFT_HOME/api_key``;
    the URL is ``base_url``, else ``$OPENRFT_BASE_URL``, else the embedded service's. ``max_retries`` (2) retries
    connection errors, 408, 409, 429 and 5xx with backoff; other keywords are the SDK's."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | httpx2.URL | None = None,
        timeout: float | Timeout | NotGiven | None = not_given,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx2.Client | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            api_key=resolve_api_key(api_key),
            base_url=resolve_base_url(base_url),
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            http_client=http_client,
            **options,
        )

    @cached_property
    def files(self) -> Files:
        return Files(self)

    @cached_property
    def fine_tuning(self) -> FineTuning:
        return FineTuning(self)

    @cached_property
    def models(self) -> Models:
        return Models(self)

    @property
    def graders(self) -> Graders:
        """Run or validate a grader: ``client.fine_tuning.alpha.graders`` (OpenAI's path), for short."""
        return self.fine_tuning.alpha.graders


class AsyncOpenRFT(AsyncOpenAI):
    """Asynchronous twin of :class:`OpenRFT` (same resources; list methods return async paginators)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | httpx2.URL | None = None,
        timeout: float | Timeout | NotGiven | None = not_given,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx2.AsyncClient | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            api_key=resolve_api_key(api_key),
            base_url=resolve_base_url(base_url),
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            http_client=http_client,
            **options,
        )

    @cached_property
    def files(self) -> AsyncFiles:
        return AsyncFiles(self)

    @cached_property
    def fine_tuning(self) -> AsyncFineTuning:
        return AsyncFineTuning(self)

    @cached_property
    def models(self) -> AsyncModels:
        return AsyncModels(self)

    @property
    def graders(self) -> AsyncGraders:
        return self.fine_tuning.alpha.graders
