"""``client.fine_tuning.jobs``: the SDK's resource with typed OpenRFT options on ``create`` (sent in the
body's ``"openrft"`` object, the SDK's ``extra_body`` way), jobs parsed with their ``openrft`` field, and the
``wait`` / ``follow`` helpers. Events, checkpoints, paging, retries and errors are the SDK's."""

# ruff: noqa: ASYNC109  (a per-call HTTP timeout, like openai-python; not an asyncio deadline)

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from openai import Omit, omit
from openai.pagination import AsyncCursorPage, SyncCursorPage
from openai.resources.fine_tuning import jobs as sdk
from openai.types.fine_tuning import FineTuningJobEvent
from rich.console import Console
from typing_extensions import Unpack

from openrft._follow import EventCallback, EventCursor, JobProgress
from openrft._request import RequestExtras, given, path_id, request_options
from openrft.resources.fine_tuning._job_body import job_body
from openrft.types.fine_tuning_job import STOPPED_STATUSES, FineTuningJob
from openrft.types.openrft_options import (
    AugmentationOptions,
    DistributedOptions,
    EvalOptions,
    OpenRFTOptions,
    PRMOptions,
    ReinforcementHyperparameters,
    RLOptions,
    SFTOptions,
)

if TYPE_CHECKING:
    from openai._base_client import AsyncPaginator

__all__ = ["AsyncJobs", "Jobs"]

_PATH = "/fine_tuning/jobs"
_EVENTS_PAGE = 100
# create's OpenAI fields besides model and training_file, and its OpenRFT keywords (every option of the object)
_SDK_FIELDS = ("validation_file", "suffix", "seed", "metadata", "integrations", "method", "hyperparameters")
_OPENRFT_KEYWORDS = tuple(OpenRFTOptions.__annotations__)


def _create_request(args: Mapping[str, Any]) -> tuple[dict[str, Any], RequestExtras]:
    """From ``create``'s arguments (its ``locals()``): the body of OpenAI's fields, and the request's extras
    with the OpenRFT options in ``extra_body`` (whose own keys, if the caller passed any, win)."""
    body = job_body(
        model=args["model"],
        training_file=args["training_file"],
        **{name: given(args[name]) for name in _SDK_FIELDS},
        grader=args["grader"],
        openrft=args["openrft"],
        openrft_keywords={name: args[name] for name in _OPENRFT_KEYWORDS},
    )
    extras: RequestExtras = args["extras"]
    options = body.pop("openrft", None)
    if options:
        extra_body = cast("Mapping[str, Any]", extras.get("extra_body") or {})
        extras = {**extras, "extra_body": {"openrft": options, **extra_body}}
    return body, extras


def _list_query(after: Any, limit: Any, metadata: Any) -> dict[str, Any]:
    return {"after": given(after), "limit": given(limit), "metadata": given(metadata) or None}


def _check_wait(job: FineTuningJob, statuses: Iterable[str], deadline: float | None) -> bool:
    if job.status in statuses:
        return True
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"job {job.id} is still {job.status}")
    return False


class Jobs(sdk.Jobs):
    def create(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | Omit | None = None,
        suffix: str | Omit | None = None,
        seed: int | Omit | None = None,
        metadata: Mapping[str, str] | Omit | None = None,
        integrations: Any = None,
        method: Mapping[str, Any] | Omit | None = None,
        grader: Mapping[str, Any] | None = None,
        hyperparameters: ReinforcementHyperparameters | Mapping[str, Any] | Omit | None = None,
        openrft: OpenRFTOptions | Mapping[str, Any] | None = None,
        augmentation: AugmentationOptions | None = None,
        sft: SFTOptions | None = None,
        rl: RLOptions | None = None,
        prm: PRMOptions | None = None,
        eval: EvalOptions | None = None,
        distributed: DistributedOptions | None = None,
        icl_k: int | None = None,
        system_prompt: str | None = None,
        reference: str | None = None,
        response_template: str | None = None,
        lora_rank: int | None = None,
        lora_alpha: int | Literal["auto"] | None = None,
        lora_dropout: float | None = None,
        max_minutes: float | None = None,
        merge_weights: bool | None = None,
        keep_checkpoints: int | None = None,
        **extras: Unpack[RequestExtras],
    ) -> FineTuningJob:
        """Create a job. ``grader=`` is a shortcut for ``method={"type": "reinforcement", ...}``; the OpenRFT
        keywords (``sft``, ``rl``, ``icl_k``, ``max_minutes``...) are merged over ``openrft`` into the job's
        ``"openrft"`` object."""
        body, extras = _create_request(locals())
        return self._post(_PATH, body=body, options=request_options(extras), cast_to=FineTuningJob)

    # The SDK's pages are invariant in their item type, so a page of the subclass is no override for mypy.
    def list(  # type: ignore[override]
        self,
        *,
        after: str | Omit | None = omit,
        limit: int | Omit | None = omit,
        metadata: Mapping[str, str] | Omit | None = omit,
        **extras: Unpack[RequestExtras],
    ) -> SyncCursorPage[FineTuningJob]:
        """Newest first; iterate the page for every job. ``metadata={"k": "v"}`` keeps jobs with all pairs."""
        return self._get_api_list(
            _PATH,
            page=SyncCursorPage[FineTuningJob],
            options=request_options(extras, _list_query(after, limit, metadata)),
            model=FineTuningJob,
        )

    def retrieve(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return self._get(
            f"{_PATH}/{path_id(fine_tuning_job_id)}", options=request_options(extras), cast_to=FineTuningJob
        )

    def cancel(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return self._action(fine_tuning_job_id, "cancel", extras)

    def pause(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return self._action(fine_tuning_job_id, "pause", extras)

    def resume(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return self._action(fine_tuning_job_id, "resume", extras)

    def _action(self, job_id: str, action: str, extras: RequestExtras) -> FineTuningJob:
        return self._post(
            f"{_PATH}/{path_id(job_id)}/{action}", options=request_options(extras), cast_to=FineTuningJob
        )

    def wait(
        self,
        fine_tuning_job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        statuses: Iterable[str] = STOPPED_STATUSES,
    ) -> FineTuningJob:
        """Poll until the job is in one of ``statuses`` (default: finished, failed, cancelled or paused)."""
        wanted = frozenset(statuses)
        deadline = time.monotonic() + timeout if timeout is not None else None
        while True:
            job = self.retrieve(fine_tuning_job_id)
            if _check_wait(job, wanted, deadline):
                return job
            time.sleep(poll_interval)

    def follow(
        self,
        fine_tuning_job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        show_progress: bool = True,
        console: Console | None = None,
        on_event: EventCallback | None = None,
        statuses: Iterable[str] = STOPPED_STATUSES,
    ) -> FineTuningJob:
        """Stream the job's events (oldest first, history included) with a progress bar (step/total, train
        and validation reward, time left from the job's estimate) until it stops; returns the final job."""
        wanted = frozenset(statuses)
        deadline = time.monotonic() + timeout if timeout is not None else None
        cursor = EventCursor()
        # Fetched before anything is drawn: a missing job is a NotFoundError, not a bar and then an error.
        job = self.retrieve(fine_tuning_job_id)
        with JobProgress(console=console, show=show_progress, on_event=on_event) as progress:
            while True:
                # The job first, then its events: a stopped job's last events are then all fetched.
                events = cursor.collect(self.list_events(fine_tuning_job_id, limit=_EVENTS_PAGE))
                progress.update(job, events)
                if _check_wait(job, wanted, deadline):
                    return job
                time.sleep(poll_interval)
                job = self.retrieve(fine_tuning_job_id)


class AsyncJobs(sdk.AsyncJobs):
    async def create(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | Omit | None = None,
        suffix: str | Omit | None = None,
        seed: int | Omit | None = None,
        metadata: Mapping[str, str] | Omit | None = None,
        integrations: Any = None,
        method: Mapping[str, Any] | Omit | None = None,
        grader: Mapping[str, Any] | None = None,
        hyperparameters: ReinforcementHyperparameters | Mapping[str, Any] | Omit | None = None,
        openrft: OpenRFTOptions | Mapping[str, Any] | None = None,
        augmentation: AugmentationOptions | None = None,
        sft: SFTOptions | None = None,
        rl: RLOptions | None = None,
        prm: PRMOptions | None = None,
        eval: EvalOptions | None = None,
        distributed: DistributedOptions | None = None,
        icl_k: int | None = None,
        system_prompt: str | None = None,
        reference: str | None = None,
        response_template: str | None = None,
        lora_rank: int | None = None,
        lora_alpha: int | Literal["auto"] | None = None,
        lora_dropout: float | None = None,
        max_minutes: float | None = None,
        merge_weights: bool | None = None,
        keep_checkpoints: int | None = None,
        **extras: Unpack[RequestExtras],
    ) -> FineTuningJob:
        body, extras = _create_request(locals())
        return await self._post(_PATH, body=body, options=request_options(extras), cast_to=FineTuningJob)

    def list(  # type: ignore[override]
        self,
        *,
        after: str | Omit | None = omit,
        limit: int | Omit | None = omit,
        metadata: Mapping[str, str] | Omit | None = omit,
        **extras: Unpack[RequestExtras],
    ) -> AsyncPaginator[FineTuningJob, AsyncCursorPage[FineTuningJob]]:
        return self._get_api_list(
            _PATH,
            page=AsyncCursorPage[FineTuningJob],
            options=request_options(extras, _list_query(after, limit, metadata)),
            model=FineTuningJob,
        )

    async def retrieve(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return await self._get(
            f"{_PATH}/{path_id(fine_tuning_job_id)}", options=request_options(extras), cast_to=FineTuningJob
        )

    async def cancel(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return await self._action(fine_tuning_job_id, "cancel", extras)

    async def pause(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return await self._action(fine_tuning_job_id, "pause", extras)

    async def resume(self, fine_tuning_job_id: str, **extras: Unpack[RequestExtras]) -> FineTuningJob:
        return await self._action(fine_tuning_job_id, "resume", extras)

    async def _action(self, job_id: str, action: str, extras: RequestExtras) -> FineTuningJob:
        return await self._post(
            f"{_PATH}/{path_id(job_id)}/{action}", options=request_options(extras), cast_to=FineTuningJob
        )

    async def wait(
        self,
        fine_tuning_job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        statuses: Iterable[str] = STOPPED_STATUSES,
    ) -> FineTuningJob:
        wanted = frozenset(statuses)
        deadline = time.monotonic() + timeout if timeout is not None else None
        while True:
            job = await self.retrieve(fine_tuning_job_id)
            if _check_wait(job, wanted, deadline):
                return job
            await asyncio.sleep(poll_interval)

    async def follow(
        self,
        fine_tuning_job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        show_progress: bool = True,
        console: Console | None = None,
        on_event: EventCallback | None = None,
        statuses: Iterable[str] = STOPPED_STATUSES,
    ) -> FineTuningJob:
        wanted = frozenset(statuses)
        deadline = time.monotonic() + timeout if timeout is not None else None
        cursor = EventCursor()
        job = await self.retrieve(fine_tuning_job_id)  # a missing job fails before anything is drawn
        with JobProgress(console=console, show=show_progress, on_event=on_event) as progress:
            while True:
                newest_first = [e async for e in self._events_until(fine_tuning_job_id, cursor.newest_id)]
                progress.update(job, cursor.collect(newest_first))
                if _check_wait(job, wanted, deadline):
                    return job
                await asyncio.sleep(poll_interval)
                job = await self.retrieve(fine_tuning_job_id)

    async def _events_until(self, job_id: str, stop_id: str | None) -> AsyncIterator[FineTuningJobEvent]:
        async for event in self.list_events(job_id, limit=_EVENTS_PAGE):
            yield event
            if event.id == stop_id:
                return
