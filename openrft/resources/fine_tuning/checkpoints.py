"""``client.fine_tuning.jobs.checkpoints``."""

from __future__ import annotations

from openrft._base_client import NOT_GIVEN, NotGiven, Timeout
from openrft._resource import AsyncResource, SyncResource, quote_id
from openrft.pagination import AsyncPaginator, SyncCursorPage
from openrft.types.fine_tuning_job_checkpoint import FineTuningJobCheckpoint

__all__ = ["AsyncCheckpoints", "Checkpoints"]


def _params(after: str | None, limit: int | None) -> dict[str, object]:
    return {k: v for k, v in {"after": after, "limit": limit}.items() if v is not None}


class Checkpoints(SyncResource):
    def list(
        self,
        fine_tuning_job_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> SyncCursorPage[FineTuningJobCheckpoint]:
        return self._list(
            f"/fine_tuning/jobs/{quote_id(fine_tuning_job_id)}/checkpoints",
            FineTuningJobCheckpoint,
            _params(after, limit),
            timeout=timeout,
        )


class AsyncCheckpoints(AsyncResource):
    def list(
        self,
        fine_tuning_job_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[FineTuningJobCheckpoint]:
        return self._list(
            f"/fine_tuning/jobs/{quote_id(fine_tuning_job_id)}/checkpoints",
            FineTuningJobCheckpoint,
            _params(after, limit),
            timeout=timeout,
        )
