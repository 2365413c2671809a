"""The Celery producer side: broker configuration shared with the workers, and enqueueing by task name
(the API knows the workers' task names only, never their code)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery
from tenacity import retry, stop_after_attempt, wait_exponential

from core.settings import Settings, get_settings

log = logging.getLogger("openrft.queue")

VALIDATE_JOB_FILES = "openrft.validate_job_files"
TRAIN_JOB = "openrft.train_job"
REAP_JOBS = "openrft.reap_jobs"
JOIN_LAUNCH = "openrft.join_launch"
"""Sent by node 0 of a worker group to each other node's own queue (core.worker_group.group_queue)."""

QUEUE_DEFAULT = "default"
QUEUE_GPU = "gpu"


def celery_config(settings: Settings) -> dict[str, Any]:
    if settings.redis_url:
        broker = settings.redis_url
        transport_options: dict[str, Any] = {
            # A task whose worker vanished is redelivered after this long (acks_late).
            "visibility_timeout": 3600,
        }
    else:
        # Embedded default: a filesystem broker under OPENRFT_HOME, no Redis needed.
        folder = settings.broker_dir
        for sub in ("queue", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        broker = "filesystem://"
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
        }
    return {
        "broker_url": broker,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE_DEFAULT,
        "task_routes": {
            VALIDATE_JOB_FILES: {"queue": QUEUE_DEFAULT},
            REAP_JOBS: {"queue": QUEUE_DEFAULT},
            TRAIN_JOB: {"queue": QUEUE_GPU},
        },
        # State lives in the database; no result backend is needed.
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


@lru_cache
def get_producer() -> Celery:
    app = Celery("openrft-api")
    app.conf.update(celery_config(get_settings()))
    return app


@retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.2, max=2), reraise=True)
def enqueue(task_name: str, job_id: str, **kwargs: Any) -> str:
    """Send a task by name; returns the Celery task id. Callers commit the job row first."""
    result = get_producer().send_task(task_name, args=[job_id], kwargs=kwargs)
    return str(result.id)


def send_to_queue(queue: str, task_name: str, *, expires: float | None = None, **kwargs: Any) -> str:
    """Send a task by name to one named queue (a worker group's node); ``expires``: seconds after which a
    worker drops it unrun. Returns the Celery task id."""
    result = get_producer().send_task(task_name, kwargs=kwargs, queue=queue, expires=expires)
    return str(result.id)


def revoke(task_id: str) -> None:
    try:
        get_producer().control.revoke(task_id)
    except Exception:  # the cooperative cancel in the worker does not depend on this
        log.warning("revoke of task %s failed", task_id, exc_info=True)


_BROKER_MARKER = "openrft:broker-alive"


def broker_was_reset(settings: Settings) -> bool:
    """True when the Redis broker lost its data since the last call (restarted without persistence, or
    flushed): the messages of queued jobs went with it and must be sent again. The marker lives in the
    broker's own database, so it disappears exactly when they do. Always False for the filesystem broker.
    The very first call also answers True; the resends it causes are skipped by the workers' claim."""
    if not settings.redis_url:
        return False
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(client.set(_BROKER_MARKER, "1", nx=True))
    finally:
        client.close()
