"""Join a launch of node 0 of this worker's group, on the group queue of a node 1..N-1 (workers.group)."""

from __future__ import annotations

from typing import Any

from core.queue import JOIN_LAUNCH
from workers.celery_app import celery_app
from workers.group import join_launch as run_join


# Acknowledged on receipt: after a lost follower the leader's ranks fail and the job's next attempt sends a
# new request; a redelivered one would join an attempt that is gone.
@celery_app.task(name=JOIN_LAUNCH, acks_late=False, reject_on_worker_lost=False)
def join_launch(request: dict[str, Any]) -> int:
    return run_join(request)
