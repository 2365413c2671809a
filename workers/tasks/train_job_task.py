"""Train one job on the ``gpu`` queue."""

from __future__ import annotations

from celery import Task

from app.queue import TRAIN_JOB
from workers.celery_app import celery_app
from workers.runner import run_training


@celery_app.task(name=TRAIN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True)
def train_job(self: Task, job_id: str) -> str:
    return run_training(job_id, worker=str(self.request.hostname), task_id=self.request.id)
