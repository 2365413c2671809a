"""Train one job on the ``gpu`` queue."""

from __future__ import annotations

import random

from celery import Task
from sqlalchemy.exc import DBAPIError

from core.db.retry import is_transient
from core.queue import TRAIN_JOB
from workers.celery_app import celery_app
from workers.runner import run_training


def retry_countdown(retries: int) -> float:
    """Exponential backoff with jitter, capped at a minute: a database restart costs seconds, an outage
    is not hammered."""
    return min(60.0, 2.0**retries) * random.uniform(0.5, 1.0)


@celery_app.task(name=TRAIN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def train_job(self: Task, job_id: str) -> str:
    try:
        return run_training(job_id, worker=str(self.request.hostname), task_id=self.request.id)
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from exc
