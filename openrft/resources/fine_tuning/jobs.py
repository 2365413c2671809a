"""``client.fine_tuning.jobs``: create (OpenAI's fields plus typed OpenRFT options), list, retrieve, cancel,
pause, resume, events, checkpoints, and the ``wait`` / ``follow`` helpers."""

# ruff: noqa: ASYNC109  (a per-call HTTP timeout, like openai-python; not an asyncio deadline)

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from rich.console import Console

from openrft._base_client import NOT_GIVEN, NotGiven, Timeout
from openrft._follow import EventCallback, EventCursor, JobProgress
from openrft._resource import AsyncResource, SyncResource, quote_id
from openrft.pagination import AsyncPaginator, SyncCursorPage
from openrft.resources.fine_tuning._job_body import job_body
from openrft.resources.fine_tuning.checkpoints import AsyncCheckpoints, Checkpoints
from openrft.types.fine_tuning_job import STOPPED_STATUSES, FineTuningJob
from openrft.types.fine_tuning_job_event import FineTuningJobEvent
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

__all__ = ["AsyncJobs", "Jobs"]

_EVENTS_PAGE = 100


def _list_params(after: str | None, limit: int | None, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"after": after, "limit": limit}
    for key, value in (metadata or {}).items():
        params[f"metadata[{key}]"] = value
    return {k: v for k, v in params.items() if v is not None}


def _check_wait(job: FineTuningJob, statuses: Iterable[str], deadline: float | None) -> bool:
    if job.status in statuses:
        return True
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"job {job.id} is still {job.status}")
    return False


class Jobs(SyncResource):
    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self._client)

    def create(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        metadata: Mapping[str, str] | None = None,
        integrations: Any = None,
        method: Mapping[str, Any] | None = None,
        grader: Mapping[str, Any] | None = None,
        hyperparameters: ReinforcementHyperparameters | Mapping[str, Any] | None = None,
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
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> FineTuningJob:
        """Create a job. ``grader=`` is a shortcut for ``method={"type": "reinforcement", ...}``; the OpenRFT
        keywords (``sft``, ``rl``, ``icl_k``, ``max_minutes``...) fill the job's ``"openrft"`` object."""
        body = job_body(
            model=model,
            training_file=training_file,
            validation_file=validation_file,
            suffix=suffix,
            seed=seed,
            metadata=metadata,
            integrations=integrations,
            method=method,
            grader=grader,
            hyperparameters=hyperparameters,
            openrft=openrft,
            openrft_keywords={
                "augmentation": augmentation,
                "sft": sft,
                "rl": rl,
                "prm": prm,
                "eval": eval,
                "distributed": distributed,
                "icl_k": icl_k,
                "system_prompt": system_prompt,
                "reference": reference,
                "response_template": response_template,
                "lora_rank": lora_rank,
                "lora_alpha": lora_alpha,
                "lora_dropout": lora_dropout,
                "max_minutes": max_minutes,
                "merge_weights": merge_weights,
                "keep_checkpoints": keep_checkpoints,
            },
        )
        return self._client.post(
            "/fine_tuning/jobs",
            FineTuningJob,
            body=body,
            extra_headers=extra_headers,
            extra_body=extra_body,
            timeout=timeout,
        )

    def list(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> SyncCursorPage[FineTuningJob]:
        """Newest first; iterate the page for every job. ``metadata={"k": "v"}`` keeps jobs with all pairs."""
        return self._list(
            "/fine_tuning/jobs", FineTuningJob, _list_params(after, limit, metadata), timeout=timeout
        )

    def retrieve(self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FineTuningJob:
        return self._client.get(
            f"/fine_tuning/jobs/{quote_id(fine_tuning_job_id)}", FineTuningJob, timeout=timeout
        )

    def cancel(self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FineTuningJob:
        return self._action(fine_tuning_job_id, "cancel", timeout)

    def pause(self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FineTuningJob:
        return self._action(fine_tuning_job_id, "pause", timeout)

    def resume(self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FineTuningJob:
        return self._action(fine_tuning_job_id, "resume", timeout)

    def _action(self, job_id: str, action: str, timeout: Timeout | NotGiven) -> FineTuningJob:
        return self._client.post(
            f"/fine_tuning/jobs/{quote_id(job_id)}/{action}", FineTuningJob, timeout=timeout
        )

    def list_events(
        self,
        fine_tuning_job_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> SyncCursorPage[FineTuningJobEvent]:
        """Newest first, like OpenAI's."""
        return self._list(
            f"/fine_tuning/jobs/{quote_id(fine_tuning_job_id)}/events",
            FineTuningJobEvent,
            _list_params(after, limit, None),
            timeout=timeout,
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


class AsyncJobs(AsyncResource):
    @property
    def checkpoints(self) -> AsyncCheckpoints:
        return AsyncCheckpoints(self._client)

    async def create(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        metadata: Mapping[str, str] | None = None,
        integrations: Any = None,
        method: Mapping[str, Any] | None = None,
        grader: Mapping[str, Any] | None = None,
        hyperparameters: ReinforcementHyperparameters | Mapping[str, Any] | None = None,
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
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> FineTuningJob:
        body = job_body(
            model=model,
            training_file=training_file,
            validation_file=validation_file,
            suffix=suffix,
            seed=seed,
            metadata=metadata,
            integrations=integrations,
            method=method,
            grader=grader,
            hyperparameters=hyperparameters,
            openrft=openrft,
            openrft_keywords={
                "augmentation": augmentation,
                "sft": sft,
                "rl": rl,
                "prm": prm,
                "eval": eval,
                "distributed": distributed,
                "icl_k": icl_k,
                "system_prompt": system_prompt,
                "reference": reference,
                "response_template": response_template,
                "lora_rank": lora_rank,
                "lora_alpha": lora_alpha,
                "lora_dropout": lora_dropout,
                "max_minutes": max_minutes,
                "merge_weights": merge_weights,
                "keep_checkpoints": keep_checkpoints,
            },
        )
        return await self._client.post(
            "/fine_tuning/jobs",
            FineTuningJob,
            body=body,
            extra_headers=extra_headers,
            extra_body=extra_body,
            timeout=timeout,
        )

    def list(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[FineTuningJob]:
        return self._list(
            "/fine_tuning/jobs", FineTuningJob, _list_params(after, limit, metadata), timeout=timeout
        )

    async def retrieve(
        self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN
    ) -> FineTuningJob:
        return await self._client.get(
            f"/fine_tuning/jobs/{quote_id(fine_tuning_job_id)}", FineTuningJob, timeout=timeout
        )

    async def cancel(
        self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN
    ) -> FineTuningJob:
        return await self._action(fine_tuning_job_id, "cancel", timeout)

    async def pause(
        self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN
    ) -> FineTuningJob:
        return await self._action(fine_tuning_job_id, "pause", timeout)

    async def resume(
        self, fine_tuning_job_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN
    ) -> FineTuningJob:
        return await self._action(fine_tuning_job_id, "resume", timeout)

    async def _action(self, job_id: str, action: str, timeout: Timeout | NotGiven) -> FineTuningJob:
        return await self._client.post(
            f"/fine_tuning/jobs/{quote_id(job_id)}/{action}", FineTuningJob, timeout=timeout
        )

    def list_events(
        self,
        fine_tuning_job_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[FineTuningJobEvent]:
        return self._list(
            f"/fine_tuning/jobs/{quote_id(fine_tuning_job_id)}/events",
            FineTuningJobEvent,
            _list_params(after, limit, None),
            timeout=timeout,
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

    async def _events_until(self, job_id: str, stop_id: str | None) -> Any:
        async for event in self.list_events(job_id, limit=_EVENTS_PAGE):
            yield event
            if event.id == stop_id:
                return
