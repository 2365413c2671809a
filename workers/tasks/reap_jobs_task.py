"""Periodic (every ``OPENRFT_REAPER_INTERVAL_SECONDS``): notice jobs whose worker vanished (lease expired) and
re-queue them to resume from their last checkpoint, send again any job whose message never reached the
broker or was lost with it (a Redis restart without persistence), and send waiting jobs of organizations
that have a free running slot."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from core import jobstore
from core.db.base import utcnow
from core.db.models import Job
from core.db.retry import is_transient
from core.db.session import session_scope
from core.queue import REAP_JOBS, TRAIN_JOB, VALIDATE_JOB_FILES, broker_was_reset, enqueue
from core.settings import get_settings
from workers.celery_app import celery_app
from workers.runner import MAX_ATTEMPTS, dispatch_waiting

log = logging.getLogger("openrft.reaper")

__all__ = ["MAX_ATTEMPTS", "reap_jobs"]


def unsent_grace_seconds(interval: float) -> float:
    """How long a job may go without a message before the reaper sends one: two of its periods, so it
    never races the API's own send right after the commit."""
    return max(5.0, 2 * interval)


@celery_app.task(name=REAP_JOBS)
def reap_jobs() -> dict[str, int]:
    try:
        return _reap()
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        log.warning("reaper skipped a round: the database is unavailable (%s)", exc.orig or exc)
        return {}


def _reap() -> dict[str, int]:
    settings = get_settings()
    now = utcnow()
    stale = now - timedelta(seconds=settings.job_lease_seconds)
    counts = {"requeued": 0, "failed": 0, "resent": 0, "dispatched": 0}
    resend: list[tuple[str, str]] = []
    try:
        lost_broker = broker_was_reset(settings)
    except Exception:
        log.warning("cannot reach the broker; skipping the lost-message check", exc_info=True)
        lost_broker = False
    with session_scope() as s:
        for job in s.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < stale)).all():
            silent = int((now - job.heartbeat_at).total_seconds()) if job.heartbeat_at else 0
            if job.losses + 1 >= MAX_ATTEMPTS:
                message = (
                    f"Worker lost {job.losses + 1} times (no heartbeat for {silent}s); giving up. Its last "
                    "snapshot is kept: POST .../resume starts it again from there."
                )
                if jobstore.transition(
                    s,
                    job.id,
                    "failed",
                    from_=("running",),
                    error={"code": "worker_lost", "message": message, "param": None},
                    losses=job.losses + 1,
                ):
                    jobstore.add_event(s, job.pk, message, level="error")
                    counts["failed"] += 1
            elif jobstore.transition(
                s,
                job.id,
                "queued",
                from_=("running",),
                worker=job.worker,
                task_id=None,
                losses=job.losses + 1,
            ):
                jobstore.add_event(
                    s,
                    job.pk,
                    f"Worker {job.worker} stopped answering (no heartbeat for {silent}s); "
                    "re-queued to resume from its last checkpoint.",
                    level="warn",
                )
                resend.append((TRAIN_JOB, job.id))
                counts["requeued"] += 1
        if lost_broker:
            # Every message in flight is gone; a job that had one gets a new one.
            for job in s.scalars(
                select(Job).where(Job.status.in_(("validating_files", "queued")), Job.task_id.is_not(None))
            ).all():
                resend.append((VALIDATE_JOB_FILES if job.status == "validating_files" else TRAIN_JOB, job.id))
                counts["resent"] += 1
            if counts["resent"]:
                log.warning("the broker lost its messages; sending %d jobs again", counts["resent"])
        grace = now - timedelta(seconds=unsent_grace_seconds(settings.reaper_interval_seconds))
        already = {job_id for _, job_id in resend}
        for job in s.scalars(
            select(Job).where(Job.status == "validating_files", Job.task_id.is_(None), Job.created_at < grace)
        ).all():
            if job.id not in already:
                resend.append((VALIDATE_JOB_FILES, job.id))
                counts["resent"] += 1
        # Queued jobs without a message: never sent, or waiting for their organization's cap.
        waiting_orgs = set(
            s.scalars(
                select(Job.org_pk).where(
                    Job.status == "queued", Job.task_id.is_(None), Job.created_at < grace
                )
            ).all()
        )
    for task, job_id in resend:
        try:
            task_id = enqueue(task, job_id)
        except Exception:
            log.exception("reaper could not enqueue %s for %s", task, job_id)
            continue
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(task_id=task_id))
    for org_pk in waiting_orgs:
        counts["dispatched"] += len(dispatch_waiting(org_pk, settings))
    return counts
