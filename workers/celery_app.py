"""The Celery application of the workers: queues ``default`` (file validation, reaper) and ``gpu`` (training),
and a worker group's own queues, on which node 0 sends the other nodes the launches to join (core.worker_group).

Start a worker with ``celery -A workers.celery_app worker -Q gpu --concurrency 1`` (``openrft worker`` does it).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from core.queue import REAP_JOBS, celery_config
from core.settings import get_settings

celery_app = Celery(
    "openrft",
    include=[
        "workers.tasks.validate_job_files_task",
        "workers.tasks.train_job_task",
        "workers.tasks.reap_jobs_task",
        "workers.tasks.join_launch_task",
    ],
)
celery_app.conf.update(celery_config(get_settings()))
_reap_every = get_settings().reaper_interval_seconds
celery_app.conf.beat_schedule = {
    "reap-jobs": {"task": REAP_JOBS, "schedule": _reap_every, "options": {"expires": _reap_every}},
}
celery_app.conf.worker_hijack_root_logger = False


@worker_init.connect
def _plan_training_devices(sender: Any = None, **_: Any) -> None:
    # One GPU per pool child of a training worker; refuses a concurrency the GPUs cannot hold, and group
    # options that make no group (also checked by `openrft worker`, for workers started by celery itself).
    from core.worker_group import GroupConfigError
    from workers.devices import DeviceConfigError, on_worker_init
    from workers.group import check_worker

    try:
        check_worker(sender, get_settings())
        on_worker_init(sender)
    except (DeviceConfigError, GroupConfigError) as exc:
        # Celery logs and ignores exceptions of signal handlers; the worker must not start without a plan.
        raise SystemExit(f"openrft worker: {exc}") from exc


@worker_process_init.connect
def _take_training_device(**_: Any) -> None:
    # Before the child imports torch: CUDA reads CUDA_VISIBLE_DEVICES once, at its first use.
    from workers.devices import on_child_init

    on_child_init()


@worker_process_init.connect
def _fresh_db_pool(**_: Any) -> None:
    # Connections must not be shared across fork: each pool child builds its own engine.
    from core.db.session import get_engine, get_sessionmaker

    get_sessionmaker.cache_clear()
    get_engine.cache_clear()
