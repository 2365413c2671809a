"""A job's files in the object storage, so that any worker can resume a job and any API process can serve its
models, whichever machine wrote them (``OPENRFT_JOB_ARTIFACTS=storage``, the default).

Keys, under the job's organization: ``{org}/jobs/{job}/``

- ``data/training.jsonl``, ``data/validation.jsonl``: the validated inputs (the job keeps them even if the user
  deletes the uploads), written by the validating worker;
- ``checkpoints/step-{N}-{token}.tar``: each kept checkpoint, written when the trainer saves it;
- ``model-{token}.tar``: the final model (adapter or merged weights), written when the job succeeds;
- ``snapshot-{token}.tar``: the resumable state, written at every checkpoint and on pause, deleted when the
  job succeeds or is cancelled.

Directories are tar objects (see core/storage.py for why). Every upload gets a new token: the row that points
at an object changes in one UPDATE, a superseded object is deleted after that commits, and a worker that
lost its job to another can never overwrite what the new holder wrote (its snapshot is only recorded while it
holds the job).

How often state reaches the storage: at every checkpoint (``eval_interval``), the snapshot is uploaded while
the trainer waits in ``checkpoint_saved``; the state on disk is then that of the previous resume point (the
trainer saves the new one after the call). A worker killed on one machine is resumed on another from there:
it recomputes at most two evaluation intervals of steps, one more than a restart on the same machine, which
resumes from its own newer copy. Uploading every step instead would cost a copy of the adapter and its
optimizer state per step; uploading only on pause would make a killed worker's job start over elsewhere.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import ids
from core.db.models import Job
from core.storage import Storage, StorageError, get_dir, holds, put_dir, put_file
from trainer.checkpoints import step_dir
from trainer.interface import CHECKPOINTS_DIR, STATE_DIR

log = logging.getLogger("openrft.worker")


def job_prefix(org_id: str, job_id: str) -> str:
    return f"{org_id}/jobs/{job_id}"


def input_key(org_id: str, job_id: str, which: str) -> str:
    return f"{job_prefix(org_id, job_id)}/data/{which}.jsonl"


def store_input(storage: Storage, org_id: str, job_id: str, which: str, path: Path) -> None:
    put_file(storage, input_key(org_id, job_id, which), path)


class JobArtifacts:
    """Uploads and downloads of one job's directories, for the worker holding it."""

    def __init__(self, storage: Storage, *, org_id: str, job_id: str, workdir: Path, worker: str) -> None:
        self.storage = storage
        self.job_id = job_id
        self.workdir = workdir
        self.worker = worker
        self.prefix = job_prefix(org_id, job_id)

    @property
    def state_dir(self) -> Path:
        return self.workdir / STATE_DIR

    def _new_key(self, name: str) -> str:
        return f"{self.prefix}/{name}-{ids.random_token(10)}.tar"

    def put_checkpoint(self, step: int, path: Path) -> str:
        return put_dir(self.storage, self._new_key(f"checkpoints/step-{step}"), path).key

    def put_model(self, path: Path) -> str:
        return put_dir(self.storage, self._new_key("model"), path).key

    def put_snapshot(self, path: Path | None = None) -> str | None:
        """Upload the resumable state (None: the trainer has written none yet)."""
        path = path or self.state_dir
        if not path.is_dir() or not any(path.iterdir()):
            return None
        return put_dir(self.storage, self._new_key("snapshot"), path).key

    def record_snapshot(self, session: Session, key: str) -> str | None:
        """Point the job at the snapshot ``key`` if this worker still holds it; returns the object that is
        garbage now: the superseded snapshot, or ``key`` itself when the job is no longer ours."""
        old = session.scalar(select(Job.snapshot_key).where(Job.id == self.job_id))
        result = session.execute(
            update(Job)
            .where(Job.id == self.job_id, Job.worker == self.worker, Job.status == "running")
            .values(snapshot_key=key)
            .execution_options(synchronize_session=False)
        )
        return old if result.rowcount else key  # type: ignore[attr-defined]

    def delete(self, *keys: str | None) -> None:
        """Best effort: an object left behind costs space, not correctness."""
        for key in keys:
            if not key:
                continue
            try:
                self.storage.delete(key)
            except (StorageError, OSError):
                log.warning("job %s: could not delete %s from storage", self.job_id, key, exc_info=True)

    def restore(self, snapshot_key: str | None, checkpoints: dict[int, str]) -> Path | None:
        """Make this machine's working directory hold the job's stored state: the snapshot and the kept
        checkpoints (step -> key) it refers to, fetched unless already here. Returns the state directory,
        or None when no snapshot is stored.

        A state directory that holds ``snapshot_key`` was written here (or fetched before): it is that
        snapshot or newer, and its checkpoints are this machine's, so nothing is fetched. Any other local
        state is another attempt's, older than the stored one, and is replaced with its checkpoints."""
        if snapshot_key is None:
            return None
        if holds(self.state_dir, snapshot_key):
            return self.state_dir
        log.info("job %s: fetching its snapshot %s from storage", self.job_id, snapshot_key)
        get_dir(self.storage, snapshot_key, self.state_dir)
        root = self.workdir / CHECKPOINTS_DIR
        wanted = {step_dir(root, step): key for step, key in checkpoints.items()}
        if root.is_dir():
            for child in root.iterdir():
                if child not in wanted or not holds(child, wanted[child]):
                    shutil.rmtree(child, ignore_errors=True)
        for path, key in sorted(wanted.items()):
            if not holds(path, key):
                get_dir(self.storage, key, path)
        return self.state_dir
