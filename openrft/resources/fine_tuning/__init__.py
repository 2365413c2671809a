from __future__ import annotations

from functools import cached_property

from openai.resources.fine_tuning import fine_tuning as sdk

from openrft.resources.fine_tuning.jobs import AsyncJobs, Jobs

__all__ = ["AsyncFineTuning", "FineTuning"]


class FineTuning(sdk.FineTuning):
    """The SDK's ``client.fine_tuning`` with this package's jobs (checkpoint permissions and
    ``alpha.graders`` are the SDK's)."""

    @cached_property
    def jobs(self) -> Jobs:
        return Jobs(self._client)


class AsyncFineTuning(sdk.AsyncFineTuning):
    @cached_property
    def jobs(self) -> AsyncJobs:
        return AsyncJobs(self._client)
