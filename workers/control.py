"""The worker side of the trainer interface: an event sink that persists as it goes, and a control that
answers the trainer's polls from flags kept fresh by a background thread (which also renews the job's
lease with heartbeats), so ``poll()`` never touches the database."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update

from app import jobstore
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import session_scope
from trainer.interface import StopRequest

log = logging.getLogger("openrft.worker")


class DbEventSink:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def _job(self, session: Any) -> Job:
        return session.scalars(select(Job).where(Job.id == self.job_id)).one()

    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        with session_scope() as s:
            jobstore.add_event(s, self._job(s).pk, text, level=level)

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        with session_scope() as s:
            jobstore.add_event(s, self._job(s).pk, text, type="metrics", data=data)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        with session_scope() as s:
            job = self._job(s)
            ckpt = jobstore.register_checkpoint(s, job, step, str(path), metrics)
            jobstore.add_event(
                s, job.pk, f"Checkpoint created at step {step}: {ckpt.fine_tuned_model_checkpoint}"
            )

    def checkpoint_removed(self, step: int) -> None:
        with session_scope() as s:
            jobstore.remove_checkpoint(s, self._job(s), step)

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        with session_scope() as s:
            s.execute(
                update(Job)
                .where(Job.id == self.job_id)
                .values(estimated_finish=datetime.fromtimestamp(finish_at, tz=utcnow().tzinfo))
            )


class DbControl:
    """Polls the job row every ``poll_seconds`` and renews the lease every ``heartbeat_seconds``."""

    def __init__(self, job_id: str, worker: str, *, poll_seconds: float, heartbeat_seconds: float) -> None:
        self.job_id = job_id
        self.worker = worker
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._request: StopRequest | None = None
        self.lost_lease = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"control-{job_id}", daemon=True)

    def poll(self) -> StopRequest | None:
        return self._request

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        last_beat = 0.0
        clock = 0.0
        while not self._stop.wait(self.poll_seconds):
            clock += self.poll_seconds
            try:
                self._check(beat=clock - last_beat >= self.heartbeat_seconds)
                if clock - last_beat >= self.heartbeat_seconds:
                    last_beat = clock
            except Exception:  # a DB hiccup must not kill training; the next poll retries
                log.warning("control poll for %s failed", self.job_id, exc_info=True)

    def _check(self, *, beat: bool) -> None:
        with session_scope() as s:
            if beat:
                s.execute(
                    update(Job)
                    .where(Job.id == self.job_id, Job.worker == self.worker, Job.status == "running")
                    .values(heartbeat_at=utcnow())
                )
            row = s.execute(
                select(Job.status, Job.pause_requested, Job.worker).where(Job.id == self.job_id)
            ).one()
        status, pause_requested, worker = row
        if status == "running" and worker != self.worker:
            self.lost_lease = True  # the reaper gave the job to another worker: stop, write nothing
            self._request = "cancel"
        elif status != "running":
            self.lost_lease = status != "cancelled"
            self._request = "cancel"
        elif pause_requested:
            self._request = "pause"
