"""Runs one training attempt of a job: claim it, build the trainer's spec, call the trainer, record the
outcome. Every write is conditional on this worker still holding the job.

Fair sharing: an organization may have at most ``max_running_jobs_per_org`` jobs running. A worker that
receives a job of an organization at its cap leaves it queued with no message in flight (``task_id`` NULL)
and takes the next message; when one of that organization's jobs stops, :func:`dispatch_waiting` sends its
oldest waiting job again (the reaper does the same periodically, in case that send is lost). Nothing polls
while an organization stays at its cap, and other organizations' jobs are never stuck behind its backlog.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from core import ids, jobstore
from core.db.base import utcnow
from core.db.models import File, FineTunedModel, Job, JobEvent, Organization
from core.db.retry import is_transient, retry_db
from core.db.scoped import owned
from core.db.session import session_scope
from core.queue import TRAIN_JOB, enqueue
from core.settings import Settings, get_settings, grader_settings
from core.storage import StorageError, get_storage, put_file
from core.worker_group import worker_group
from trainer.interface import EventSink, JobResult, JobSpec, TrainerError
from trainer.launch import RanksFailed, job_processes, local_launch
from workers.artifacts import JobArtifacts, input_key, store_input
from workers.control import DbControl, DbEventSink
from workers.devices import job_placement
from workers.group import gather
from workers.integrations import finish_integrations, with_integrations

log = logging.getLogger("openrft.worker")

MAX_ATTEMPTS = jobstore.MAX_LOSSES
"""Attempts a job gets when its worker or its training processes die (the reaper and a failed launch)."""


def job_workdir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


def data_path(settings: Settings, job_id: str, which: str) -> Path:
    return job_workdir(settings, job_id) / "data" / f"{which}.jsonl"


class ClaimResult(enum.Enum):
    CLAIMED = "claimed"
    NOT_CLAIMABLE = "not_claimable"
    """Running elsewhere with a live lease, finished, cancelled, paused, or gone."""
    AT_CAPACITY = "at_capacity"
    """Claimable, but its organization already runs ``max_running_jobs_per_org`` jobs."""


def _claimable(settings: Settings) -> Any:
    stale = utcnow() - timedelta(seconds=settings.job_lease_seconds)
    return or_(Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < stale))


def _running_elsewhere(org_pk: int, job_id: str) -> Any:
    other = aliased(Job)
    return (
        select(func.count())
        .select_from(other)
        .where(other.org_pk == org_pk, other.status == "running", other.id != job_id)
        .scalar_subquery()
    )


def try_claim(job_id: str, worker: str, task_id: str | None, settings: Settings) -> ClaimResult:
    """Atomically take a queued job, or a running one whose lease expired, if its organization is below
    its cap. Two workers racing for the same job: exactly one UPDATE matches; racing for the last free
    slot of an organization: its row lock makes them take turns."""
    now = utcnow()
    claimable = _claimable(settings)
    cap = settings.max_running_jobs_per_org
    with session_scope() as s:
        org_pk = s.scalar(select(Job.org_pk).where(Job.id == job_id))
        if org_pk is None:
            return ClaimResult.NOT_CLAIMABLE
        conditions = [Job.id == job_id, claimable]
        if cap > 0:
            # PostgreSQL: FOR UPDATE serializes claims within one organization, and the UPDATE below then
            # counts on a fresh snapshot. SQLite: ignored, its single writer gives the same guarantee.
            s.execute(select(Organization.pk).where(Organization.pk == org_pk).with_for_update())
            conditions.append(_running_elsewhere(org_pk, job_id) < cap)
        result = s.execute(
            update(Job)
            .where(*conditions)
            .values(
                status="running",
                worker=worker,
                task_id=task_id,
                heartbeat_at=now,
                attempt=Job.attempt + 1,
                started_at=func.coalesce(Job.started_at, now),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return ClaimResult.CLAIMED
        if cap > 0 and s.scalar(select(Job.pk).where(Job.id == job_id, claimable)) is not None:
            return ClaimResult.AT_CAPACITY
        return ClaimResult.NOT_CLAIMABLE


def claim(job_id: str, worker: str, task_id: str | None, settings: Settings) -> bool:
    return try_claim(job_id, worker, task_id, settings) is ClaimResult.CLAIMED


def defer(job_id: str, task_id: str | None, settings: Settings) -> None:
    """Leave a job of an organization at its cap queued, with no message in flight, and say why once."""
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        s.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == "queued",
                or_(Job.task_id.is_(None), Job.task_id == task_id) if task_id else Job.task_id.is_(None),
            )
            .values(task_id=None)
            .execution_options(synchronize_session=False)
        )
        last = s.scalar(
            select(JobEvent).where(JobEvent.job_pk == job.pk).order_by(JobEvent.pk.desc()).limit(1)
        )
        said = last is not None and (last.data or {}).get("waiting_for") == "organization_capacity"
        if job.status == "queued" and not said:
            cap = settings.max_running_jobs_per_org
            jobstore.add_event(
                s,
                job.pk,
                f"Waiting: organization {job.organization.name!r} already has {cap} running job"
                f"{'s' * (cap != 1)} (the per-organization limit); this job starts when one of them ends.",
                data={"waiting_for": "organization_capacity", "limit": cap},
            )
        org_pk = job.org_pk
    # A slot may have freed between the claim and now; then nobody else would send this job.
    dispatch_waiting(org_pk, settings)


def dispatch_waiting(org_pk: int, settings: Settings) -> list[str]:
    """Send the oldest queued jobs of an organization that have no message in flight, as many as it has
    free slots; returns their ids. Called when one of its jobs stops, and by the reaper."""
    cap = settings.max_running_jobs_per_org
    with session_scope() as s:
        if cap > 0:
            running = s.scalar(
                select(func.count()).select_from(Job).where(Job.org_pk == org_pk, Job.status == "running")
            )
            free = cap - (running or 0)
        else:
            free = 1_000
        if free <= 0:
            return []
        waiting = s.scalars(
            select(Job.id)
            .where(Job.org_pk == org_pk, Job.status == "queued", Job.task_id.is_(None))
            .order_by(Job.pk)
            .limit(free)
        ).all()
    sent = []
    for job_id in waiting:
        try:
            task_id = enqueue(TRAIN_JOB, job_id)
        except Exception:
            log.exception("could not send waiting job %s; the reaper will retry", job_id)
            break
        with session_scope() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.task_id.is_(None))
                .values(task_id=task_id)
                .execution_options(synchronize_session=False)
            )
        sent.append(job_id)
    return sent


def build_spec(job: Job, settings: Settings) -> JobSpec:
    mtype = job.method["type"]
    inner = job.method.get(mtype) or {}
    validation = data_path(settings, job.id, "validation")
    return JobSpec(
        job_id=job.id,
        method=mtype,
        base_model=job.model,
        model_source=settings.all_base_models[job.model],
        training_file=data_path(settings, job.id, "training"),
        validation_file=validation if job.validation_file else None,
        grader=inner.get("grader"),
        response_format=inner.get("response_format"),
        hyperparameters=dict(inner.get("hyperparameters") or {}),
        openrft=dict(job.openrft or {}),
        seed=job.seed,
        resume_from=Path(job.snapshot_path) if job.snapshot_path else None,
        grader_settings=grader_settings(settings),
        cache_dir=settings.cache_dir / "models",
    )


def run_training(job_id: str, *, worker: str, task_id: str | None) -> str:
    """One attempt at a job; returns what happened (for logs and tests). Transient database errors
    propagate (the Celery task retries them); the job itself stays claimable through its lease."""
    settings = get_settings()
    outcome = try_claim(job_id, worker, task_id, settings)
    if outcome is ClaimResult.AT_CAPACITY:
        log.info("job %s: its organization is at its running-job cap; leaving it queued", job_id)
        defer(job_id, task_id, settings)
        return "deferred"
    if outcome is not ClaimResult.CLAIMED:
        log.info("job %s is not claimable (taken, cancelled or paused); skipping", job_id)
        return "skipped"
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        spec = build_spec(job, settings)
        held = _Attempt.of(s, job)
        word = "Resuming" if spec.resume_from or held.attempt > 1 else "Fine-tuning"
        jobstore.add_event(s, job.pk, f"{word} job {job.id} (attempt {held.attempt}) on worker {worker}.")
    try:
        return _train(held, spec, worker=worker, settings=settings)
    finally:
        try:
            dispatch_waiting(held.org_pk, settings)  # this job's slot is free now (unless it is retried)
        except Exception:
            log.warning(
                "could not dispatch waiting jobs of org %s; the reaper will", held.org_pk, exc_info=True
            )


@dataclass
class _Attempt:
    """What one attempt needs of its job row beyond the spec (read once, when it starts)."""

    job_id: str
    org_id: str
    org_pk: int
    attempt: int
    inputs: dict[str, str]
    """which (training, validation) -> file id"""
    snapshot_key: str | None
    checkpoints: dict[int, str] = field(default_factory=dict)
    """step -> storage key of the kept checkpoints"""
    integrations: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, session: Session, job: Job) -> _Attempt:
        stored = session.execute(
            select(FineTunedModel.step_number, FineTunedModel.storage_key).where(
                FineTunedModel.job_pk == job.pk,
                FineTunedModel.kind == "checkpoint",
                FineTunedModel.storage_key.is_not(None),
            )
        ).all()
        return cls(
            job_id=job.id,
            org_id=job.organization.id,
            org_pk=job.org_pk,
            attempt=job.attempt,
            inputs=_inputs(job),
            snapshot_key=job.snapshot_key,
            checkpoints={step: key for step, key in stored if step is not None and key},
            integrations=job.integrations,
        )


@dataclass
class _Stored:
    """What this attempt uploaded when training ended, and what the upload of the rest could not do."""

    model_key: str | None = None
    snapshot_key: str | None = None
    problem: str | None = None


def _train(held: _Attempt, spec: JobSpec, *, worker: str, settings: Settings) -> str:
    job_id = held.job_id
    workdir = job_workdir(settings, job_id)
    control = DbControl(
        job_id,
        worker,
        poll_seconds=settings.control_poll_seconds,
        heartbeat_seconds=settings.worker_heartbeat_seconds,
    )
    artifacts = (
        JobArtifacts(get_storage(), org_id=held.org_id, job_id=job_id, workdir=workdir, worker=worker)
        if settings.job_artifacts == "storage"
        else None
    )
    # A resumed attempt recomputes the steps after its last saved state: their metrics replace the
    # earlier attempt's, so the job's events list every step once.
    sink: EventSink = DbEventSink(
        job_id, retry_seconds=settings.db_retry_seconds, replace_steps=held.attempt > 1, artifacts=artifacts
    )
    control.start()  # heartbeats from here on: fetching a large snapshot must not look like a dead worker
    sink = with_integrations(
        sink,
        held.integrations,
        job_id=job_id,
        config={"model": spec.base_model, "method": spec.method, **spec.hyperparameters, "seed": spec.seed},
        mode=settings.wandb_mode,
        root=settings.home / "wandb",
    )
    ended = "failed"
    try:
        try:
            ensure_inputs(settings, held, from_storage=artifacts is not None)
            if artifacts is not None and (state := artifacts.restore(held.snapshot_key, held.checkpoints)):
                spec = spec.model_copy(update={"resume_from": state})
        except (StorageError, FileNotFoundError) as exc:
            log.error("job %s: cannot prepare its working directory: %s", job_id, exc)
            message = (
                f"Training could not start: worker {worker} could not fetch the job's files from the "
                f"storage ({exc}); check that every worker and the API use the same OPENRFT_STORAGE_DIR."
            )
            _fail(job_id, worker, "storage_error", message, None, settings)
            return "failed"
        try:
            result = _run_trainer(spec, sink, control, workdir, attempt=held.attempt, settings=settings)
        except RanksFailed as exc:
            return _ranks_failed(held, worker, exc, settings)
        except TrainerError as exc:
            _fail(job_id, worker, exc.code, exc.message, exc.param, settings)
            return "failed"
        except Exception as exc:
            if is_transient(exc):
                raise  # the database was away longer than the sink waits: the task retries, the job resumes
            problem = storage_problem(exc, workdir)
            if problem:
                log.error("job %s: storage failure under %s: %s", job_id, workdir, exc)
                _fail(job_id, worker, "storage_error", problem, None, settings)
                return "failed"
            log.exception("job %s crashed", job_id)
            _fail(
                job_id,
                worker,
                "internal_error",
                f"Training failed: {type(exc).__name__}: {exc}",
                None,
                settings,
            )
            raise
        ended = result.status
        stored = _store_outputs(artifacts, result) if not control.lost_lease else _Stored()
    finally:
        control.stop()  # after the uploads: a long one keeps the lease
        finish_integrations(sink, ended)
    if control.lost_lease:
        log.warning("job %s: lease lost to another worker; leaving the job to it", job_id)
        if artifacts is not None:
            artifacts.delete(stored.model_key, stored.snapshot_key)
        return "lost"
    outcome, garbage = retry_db(
        lambda: _finish(job_id, worker, result, stored, settings), max_seconds=settings.db_retry_seconds
    )
    if artifacts is not None:
        artifacts.delete(*garbage)
    return outcome


def _run_trainer(
    spec: JobSpec, sink: EventSink, control: DbControl, workdir: Path, *, attempt: int, settings: Settings
) -> JobResult:
    """The trainer in this process, or on several: one per GPU of this slot (``workers.devices``), or on the
    CPU the job's ``openrft.distributed.processes``; with a worker group, as many on each of its machines
    (``workers.group``). The sink, the control and the heartbeats stay here."""
    requested = job_processes(spec)
    processes, gpus = job_placement(requested)
    group = worker_group(settings)
    if requested > 1 and processes != requested:
        sink.message(
            f"openrft.distributed.processes is {requested} but this worker gives the job {len(gpus)} "
            f"GPU{'s' * (len(gpus) != 1)}: training on {processes} process{'es' * (processes != 1)}.",
            level="warn",
        )
    if processes <= 1 and not group.multinode:
        from trainer import run_job

        return run_job(spec, sink, control, workdir)
    from trainer import launch as launcher  # by its module: tests replace launcher.launch_job

    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    where = f"GPUs {','.join(gpus)} (NCCL)" if gpus else "the CPU (gloo)"
    if not group.multinode:
        sink.message(f"Training on {processes} processes on {where}.")
        launch = local_launch(processes, gpu=bool(gpus))
        return launcher.launch_job(spec, sink, control, workdir, launch, env=env)
    joined = gather(
        group,
        spec,
        workdir,
        attempt=attempt,
        processes=processes,
        backend="nccl" if gpus else "gloo",
        control=control,
        timeout_s=settings.worker_join_timeout_seconds,
    )
    if joined is None:
        return JobResult(status="cancelled")  # cancelled while the group gathered: nothing ran
    each = f"{processes} process{'es' * (processes != 1)}"
    sink.message(f"Training on the {group.nnodes} machines of this worker's group, {each} each, on {where}.")
    return launcher.launch_job(spec, sink, control, workdir, joined, env=env)


def _ranks_failed(held: _Attempt, worker: str, exc: RanksFailed, settings: Settings) -> str:
    """A training process crashed or was killed, and the launch stopped the others. Like a lost worker (the
    reaper's rule, without waiting for the lease to expire): the job is queued again and its next attempt
    resumes from the last saved state, until MAX_ATTEMPTS such losses (Job.losses: a pause or resume does not
    count). The ``finally`` of :func:`run_training` sends it (``dispatch_waiting``, in its organization's turn)."""
    log.error("job %s: %s", held.job_id, exc)
    with session_scope() as s:
        losses = int(s.scalar(select(Job.losses).where(Job.id == held.job_id)) or 0) + 1
        s.execute(update(Job).where(Job.id == held.job_id, Job.worker == worker).values(losses=losses))
    if losses >= MAX_ATTEMPTS:
        message = (
            f"Training failed: its processes died in {losses} attempts; the last time, {exc}. Its last snapshot "
            "is kept: POST .../resume starts it again from there."
        )
        _fail(held.job_id, worker, "internal_error", message, None, settings)
        return "failed"

    def write() -> bool:
        with session_scope() as s:
            job = s.scalars(select(Job).where(Job.id == held.job_id)).one()
            if not jobstore.transition(
                s, held.job_id, "queued", from_=("running",), worker=worker, task_id=None
            ):
                return False
            jobstore.add_event(
                s,
                job.pk,
                f"A training process died ({exc}); re-queued to resume from its last checkpoint.",
                level="warn",
            )
            return True

    return "requeued" if retry_db(write, max_seconds=settings.db_retry_seconds) else "lost"


def _store_outputs(artifacts: JobArtifacts | None, result: JobResult) -> _Stored:
    """Upload what another machine needs of a finished attempt: the model, or the pause snapshot. A failed
    upload keeps the result on this worker's disk (said in the job's events) rather than losing it."""
    stored = _Stored()
    if artifacts is None:
        return stored
    try:
        if result.status == "succeeded" and result.model_dir is not None:
            stored.model_key = artifacts.put_model(result.model_dir)
        elif result.status == "paused" and result.snapshot_dir is not None:
            stored.snapshot_key = artifacts.put_snapshot(result.snapshot_dir)
    except StorageError as exc:
        log.warning("job %s: upload of its %s failed: %s", artifacts.job_id, result.status, exc)
        stored.problem = str(exc)
    return stored


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
_STORAGE_MESSAGES = ("No space left on device", "Read-only file system", "Disk quota exceeded")
_NEARLY_FULL = 1 << 20


def _os_reason(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return current.strerror or os.strerror(current.errno or 0)
        for marker in _STORAGE_MESSAGES:
            if marker in str(current):
                return marker
        current = current.__cause__ or current.__context__
    return None


def storage_problem(exc: BaseException, workdir: Path | None = None) -> str | None:
    """A user-facing message if ``exc`` is the disk failing a write, else None. Libraries wrap OS errors in
    their own types and words (safetensors, torch's zip writer), so besides errno and messages a full
    filesystem under ``workdir`` counts too. Paths stay in the worker's log, not in the tenant's message."""
    reason = _os_reason(exc)
    free = None
    if workdir is not None:
        try:
            free = shutil.disk_usage(workdir).free
        except OSError:
            pass
    if reason is None and free is not None and free < _NEARLY_FULL:
        reason = "No space left on device"
    if reason is None:
        return None
    space = f", {free // (1 << 20)} MiB free" if free is not None else ""
    return (
        f"Training stopped: the worker could not write the job's files ({reason}{space}). "
        "Checkpoints saved before this are intact; free space or fix the volume, then start the job again."
    )


def _fail(job_id: str, worker: str, code: str, message: str, param: str | None, settings: Settings) -> None:
    def write() -> None:
        with session_scope() as s:
            job = s.scalars(select(Job).where(Job.id == job_id)).one()
            if jobstore.transition(
                s,
                job_id,
                "failed",
                from_=("running",),
                worker=worker,
                error={"code": code, "message": message, "param": param},
            ):
                jobstore.add_event(s, job.pk, f"Job failed: {message}", level="error")

    retry_db(write, max_seconds=settings.db_retry_seconds)


def _finish(
    job_id: str, worker: str, result: JobResult, stored: _Stored, settings: Settings
) -> tuple[str, list[str | None]]:
    """Record the attempt's outcome; returns it and the storage objects it made garbage (to delete once
    this commits: superseded snapshots, or this attempt's uploads when the job is no longer ours)."""
    ours = [stored.model_key, stored.snapshot_key]
    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        if job.worker != worker:
            return "lost", ours
        previous = job.snapshot_key  # read before the UPDATEs below refresh the row
        if result.status == "cancelled":
            # The API already set the status; this records that training really stopped (and when).
            jobstore.add_event(s, job.pk, f"Worker {worker} stopped training after the cancel request.")
            job.snapshot_key = None  # nothing resumes a cancelled job
            return "cancelled", [previous, *ours]
        if stored.problem is not None:
            what = "model" if result.status == "succeeded" else "snapshot"
            jobstore.add_event(
                s,
                job.pk,
                f"The {what} could not be uploaded to the storage ({stored.problem}): it is kept on worker "
                f"{worker}'s disk, so only that machine can {'serve' if what == 'model' else 'resume'} it.",
                level="warn",
            )
        if result.status == "paused":
            snapshot_key = stored.snapshot_key or previous
            if jobstore.transition(
                s,
                job_id,
                "paused",
                from_=("running",),
                worker=worker,
                pause_requested=False,
                snapshot_path=str(result.snapshot_dir) if result.snapshot_dir else job.snapshot_path,
                snapshot_key=snapshot_key,
            ):
                jobstore.add_event(s, job.pk, "Job paused; resume it to continue from the saved snapshot.")
                return "paused", [previous if previous != snapshot_key else None]
            return "paused", ours
        if result.model_dir is None:
            raise RuntimeError("the trainer reported success without a model")
        result_files = []
        for path in (result.result_file, result.rollouts_file):  # metrics CSV, then sampled rollouts
            if path is None or not path.exists():
                continue
            try:
                result_files.append(_store_result_file(s, job, path))
            except StorageError as exc:  # the model is done; a missing results file must not lose it
                jobstore.add_event(
                    s, job.pk, f"The results file {path.name} could not be stored: {exc}", level="warn"
                )
        replaced = jobstore.model_storage_key(s, jobstore.fine_tuned_model_name(job))
        name = jobstore.register_final_model(s, job, str(result.model_dir), storage_key=stored.model_key)
        if jobstore.transition(
            s,
            job_id,
            "succeeded",
            from_=("running",),
            worker=worker,
            fine_tuned_model=name,
            trained_tokens=result.trained_tokens,
            result_files=result_files,
            estimated_finish=None,
            snapshot_key=None,  # nothing resumes a finished job
        ):
            jobstore.add_event(s, job.pk, f"New fine-tuned model created: {name}")
            jobstore.add_event(s, job.pk, "The job has successfully completed")
            return "succeeded", [previous, replaced]
        return "cancelled", [replaced]


def _store_result_file(session: Session, job: Job, path: Path) -> str:
    file_id = ids.file_id()
    stored = put_file(get_storage(), f"{job.organization.id}/{file_id}", path)
    session.add(
        File(
            id=file_id,
            org_pk=job.org_pk,
            filename=f"{job.id}-{path.name}",
            purpose="fine-tune-results",
            bytes=stored.bytes,
            sha256=stored.sha256,
            status="processed",
            storage_key=stored.key,
        )
    )
    return file_id


def _inputs(job: Job) -> dict[str, str]:
    """which -> file id of the job's uploads."""
    files = {"training": job.training_file, "validation": job.validation_file}
    return {which: file_id for which, file_id in files.items() if file_id}


def _copy_uploads(settings: Settings, job_id: str, org_pk: int, inputs: dict[str, str]) -> None:
    storage = get_storage()
    with session_scope() as s:
        for which, file_id in inputs.items():
            row = owned(s, File, file_id, org_pk)
            if row is None:
                raise FileNotFoundError(file_id)
            storage.copy_to(row.storage_key, data_path(settings, job_id, which))


def copy_inputs(job: Job, settings: Settings) -> None:
    """Copy the job's uploads into its working directory: the job keeps its data even if the user
    deletes the file afterwards, and the trainer reads a plain local path whatever the storage is."""
    _copy_uploads(settings, job.id, job.org_pk, _inputs(job))


def store_inputs(job: Job, settings: Settings) -> None:
    """With job artifacts in the storage, put the validated copies there too: the training worker may be
    another machine, and the user may have deleted the uploads by then."""
    if settings.job_artifacts != "storage":
        return
    storage = get_storage()
    for which in _inputs(job):
        store_input(storage, job.organization.id, job.id, which, data_path(settings, job.id, which))


def ensure_inputs(settings: Settings, held: _Attempt, *, from_storage: bool) -> None:
    """The job's input copies on this machine's disk: already here (this machine validated the job), else
    fetched from the storage, else (jobs validated before the copies were stored) from the uploads."""
    missing = {w: f for w, f in held.inputs.items() if not data_path(settings, held.job_id, w).is_file()}
    if not missing:
        return
    storage = get_storage()
    if from_storage:
        for which in list(missing):
            try:
                storage.copy_to(
                    input_key(held.org_id, held.job_id, which), data_path(settings, held.job_id, which)
                )
            except StorageError:
                continue
            del missing[which]
    if missing:
        _copy_uploads(settings, held.job_id, held.org_pk, missing)


def remove_workdir(settings: Settings, job_id: str) -> None:
    shutil.rmtree(job_workdir(settings, job_id), ignore_errors=True)
