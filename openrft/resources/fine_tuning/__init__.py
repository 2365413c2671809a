from __future__ import annotations

from functools import cached_property

from openrft._resource import AsyncResource, SyncResource
from openrft.resources.fine_tuning.jobs import AsyncJobs, Jobs
from openrft.resources.graders import AsyncGraders, Graders

__all__ = ["AsyncFineTuning", "FineTuning"]


class _Alpha(SyncResource):
    @cached_property
    def graders(self) -> Graders:
        return Graders(self._client)


class _AsyncAlpha(AsyncResource):
    @cached_property
    def graders(self) -> AsyncGraders:
        return AsyncGraders(self._client)


class FineTuning(SyncResource):
    @cached_property
    def jobs(self) -> Jobs:
        return Jobs(self._client)

    @cached_property
    def alpha(self) -> _Alpha:
        """OpenAI's path to the graders (``client.fine_tuning.alpha.graders``); same as ``client.graders``."""
        return _Alpha(self._client)


class AsyncFineTuning(AsyncResource):
    @cached_property
    def jobs(self) -> AsyncJobs:
        return AsyncJobs(self._client)

    @cached_property
    def alpha(self) -> _AsyncAlpha:
        return _AsyncAlpha(self._client)
