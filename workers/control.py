"""The worker side of the trainer interface: an event sink that persists as it goes, and a control that
answers the trainer's polls from flags kept fresh by a background thread (which also renews the job's
lease with heartbeats), so ``poll()`` never touches the database."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import jobstore
from core.db.base import utcnow
from core.db.models import Checkpoint, Job, JobEvent
from core.db.retry import retry_db
from core.db.session import session_scope
from core.storage import StorageError
from trainer.interface import StopRequest
from workers.artifacts import JobArtifacts

log = logging.getLogger("openrft.worker")


class DbEventSink:
    """Each call is one transaction, retried while the database is unavailable (a restart must not
    crash hours of training), up to ``retry_seconds``."""

    def __init__(
        self,
        job_id: str,
        *,
        retry_seconds: float = 300.0,
        replace_steps: bool = False,
        artifacts: JobArtifacts | None = None,
    ) -> None:
        self.job_id = job_id
        self.retry_seconds = retry_seconds
        self.replace_steps = replace_steps
        self.artifacts = artifacts
        """Set: every checkpoint and the resumable state are uploaded for other machines."""

    def _job(self, session: Any) -> Job:
        return session.scalars(select(Job).where(Job.id == self.job_id)).one()

    def _write(self, fn: Callable[[Session], object]) -> None:
        def transaction() -> None:
            with session_scope() as s:
                fn(s)

        retry_db(transaction, max_seconds=self.retry_seconds)

    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        self._write(lambda s: jobstore.add_event(s, self._job(s).pk, text, level=level))

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        def write(s: Session) -> None:
            job_pk = self._job(s).pk
            if self.replace_steps and isinstance(data.get("step"), int):
                # The same step of the same kind (a stage's step, the end-of-run summary at the last step's number)
                # from the earlier attempt: the recomputed one replaces it.
                earlier = s.scalars(
                    select(JobEvent).where(
                        JobEvent.job_pk == job_pk,
                        JobEvent.type == "metrics",
                        JobEvent.data["step"].as_integer() == data["step"],
                    )
                )
                for event in earlier:
                    if (event.data or {}).get("stage") == data.get("stage"):
                        s.delete(event)
            jobstore.add_event(s, job_pk, text, type="metrics", data=data)

        self._write(write)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        key = snapshot = problem = None
        if self.artifacts is not None:
            # The trainer waits for this call, so the state directory cannot change while it is read.
            try:
                key = self.artifacts.put_checkpoint(step, path)
                snapshot = self.artifacts.put_snapshot()
            except StorageError as exc:
                log.warning("job %s: upload at step %s failed: %s", self.job_id, step, exc)
                problem = str(exc)
        garbage: list[str | None] = []

        def write(s: Session) -> None:
            garbage.clear()
            job = self._job(s)
            seen = s.scalar(
                select(Checkpoint.pk).where(Checkpoint.job_pk == job.pk, Checkpoint.step_number == step)
            )
            garbage.append(jobstore.model_storage_key(s, jobstore.checkpoint_model_name(job, step)))
            ckpt = jobstore.register_checkpoint(s, job, step, str(path), metrics, storage_key=key)
            if seen is None:
                jobstore.add_event(
                    s, job.pk, f"Checkpoint created at step {step}: {ckpt.fine_tuned_model_checkpoint}"
                )
            if problem is not None:
                jobstore.add_event(
                    s,
                    job.pk,
                    f"The checkpoint of step {step} could not be stored ({problem}): only this worker can "
                    "serve it or resume the job from it.",
                    level="warn",
                )
            if snapshot is not None and self.artifacts is not None:
                garbage.append(self.artifacts.record_snapshot(s, snapshot))

        self._write(write)
        if self.artifacts is not None:
            self.artifacts.delete(*(k for k in garbage if k != key))

    def checkpoint_removed(self, step: int) -> None:
        removed: list[str | None] = []

        def write(s: Session) -> None:
            removed[:] = [jobstore.remove_checkpoint(s, self._job(s), step)]

        self._write(write)
        if self.artifacts is not None:
            self.artifacts.delete(*removed)

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        finish = datetime.fromtimestamp(finish_at, tz=utcnow().tzinfo)
        self._write(
            lambda s: s.execute(update(Job).where(Job.id == self.job_id).values(estimated_finish=finish))
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
