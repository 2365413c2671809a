"""Job creation and user-driven state changes (cancel, pause, resume) for the API.

Rows are committed before anything is enqueued, so a worker never sees a job that is not in the DB.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from sqlalchemy.orm import Session

from app.auth import Principal
from app.deps import owned_or_404
from app.errors import APIError, bad_request, domain_error
from app.grading import check_grader_limits, check_judge_models
from app.item_fields import bounded_lines, first_missing, item_variables, template_item_variables
from app.schemas.jobs import JobCreate
from core import ids, jobstore
from core.db.models import File, Job
from core.queue import TRAIN_JOB, VALIDATE_JOB_FILES, enqueue, revoke
from core.settings import Settings
from core.storage import Storage
from trainer.config import ConfigError, resolve_config, user_urls
from trainer.graders import GraderValidationError, validate_grader
from trainer.graders.templates import Variable
from trainer.public_urls import literal_refusal

log = logging.getLogger("openrft.jobs")


def _file_for_job(session: Session, principal: Principal, file_id: str, param: str) -> File:
    row = owned_or_404(session, File, file_id, principal.org_pk, param=param)
    if row.purpose != "fine-tune":
        raise bad_request(
            f"File {file_id} has purpose {row.purpose!r}; fine-tuning needs files uploaded with purpose 'fine-tune'.",
            param=param,
        )
    return row


def _resolve_method(body: JobCreate) -> dict[str, Any]:
    """The method object as the user meant it: default supervised, legacy top-level hyperparameters."""
    if body.method is None:
        return {"type": "supervised", "supervised": {"hyperparameters": dict(body.hyperparameters or {})}}
    method = body.method.model_dump(exclude_none=True)
    mtype = method["type"]
    if body.hyperparameters and mtype == "supervised":
        inner = method.setdefault("supervised", {})
        inner["hyperparameters"] = {**body.hyperparameters, **(inner.get("hyperparameters") or {})}
    elif body.hyperparameters:
        raise bad_request(
            "Top-level 'hyperparameters' is deprecated and only applies to supervised jobs; "
            f"put them in method.{mtype}.hyperparameters.",
            param="hyperparameters",
        )
    for other in ("supervised", "dpo", "reinforcement"):
        if other != mtype and other in method:
            raise bad_request(f"method.type is {mtype!r} but method.{other} is set.", param=f"method.{other}")
    return method


def create_job(
    session: Session, principal: Principal, settings: Settings, body: JobCreate, storage: Storage
) -> Job:
    available = settings.all_base_models
    if body.model not in available:
        raise bad_request(
            f"Model {body.model!r} is not available for fine-tuning. Available: {', '.join(sorted(available))}.",
            param="model",
            code="model_not_available",
        )
    _file_for_job(session, principal, body.training_file, "training_file")
    if body.validation_file:
        _file_for_job(session, principal, body.validation_file, "validation_file")

    _check_integrations(body.integrations)
    method = _resolve_method(body)
    mtype = method["type"]
    if mtype == "dpo":
        raise bad_request("method.type 'dpo' is not supported by this service yet.", param="method.type")
    inner = method.setdefault(mtype, {})
    if mtype == "reinforcement":
        if inner.get("response_format") is not None:
            # Accepted and ignored would be worse than refused: nothing here constrains rollouts to a schema.
            raise bad_request(
                "method.reinforcement.response_format is not supported by this service: its rollouts and "
                "evaluations are not constrained to a schema. Remove it and ask for the format in the prompt; a "
                "grader reads a reply that is JSON as {{ sample.output_json }}.",
                param="method.reinforcement.response_format",
                code="unsupported_parameter",
            )
        if "grader" not in inner:
            raise bad_request(
                "Reinforcement jobs need method.reinforcement.grader.", param="method.reinforcement.grader"
            )
        check_grader_limits(inner["grader"], settings, at="method.reinforcement.")
        try:
            inner["grader"] = validate_grader(inner["grader"])
        except GraderValidationError as exc:
            raise domain_error(exc, grader_at="method.reinforcement.") from exc
        check_judge_models(inner["grader"], settings, at="method.reinforcement.")
    try:
        resolved = resolve_config(
            mtype, dict(inner.get("hyperparameters") or {}), dict(body.openrft or {}), base_model=body.model
        )
    except ConfigError as exc:
        raise domain_error(exc) from exc
    inner["hyperparameters"] = resolved["hyperparameters"]
    _check_ceilings(resolved["openrft"], settings)
    for param, url in user_urls(resolved["openrft"]):
        why = literal_refusal(url, settings.private_url_hosts)
        if why is not None:  # the worker also checks what the name resolves to, at every request
            raise bad_request(
                f"{param} may not point at {why}: user URLs reach public addresses only (an operator can list a "
                "private host in OPENRFT_PRIVATE_URL_HOSTS).",
                param=param,
            )
    # The rows' fields last: the cheap checks of the body above answer first, without reading a file.
    if mtype == "reinforcement":
        references = [("method.reinforcement.grader", v) for v in item_variables(inner["grader"])]
        reference_template = (body.openrft or {}).get("reference")
        if isinstance(reference_template, str):
            references += [("openrft.reference", v) for v in template_item_variables(reference_template)]
        for file_id in (body.training_file, body.validation_file):
            if file_id and references:
                _check_item_fields(session, principal, settings, storage, file_id, references)

    job = Job(
        id=ids.job_id(),
        org_pk=principal.org_pk,
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=body.seed if body.seed is not None else random.randint(0, 2147483647),
        status="validating_files",
        method=method,
        # The echo of the options with their defaults (secrets masked); the raw object, which the worker
        # needs, stays in ``openrft``.
        resolved_config={"openrft": resolved["openrft"]},
        openrft=body.openrft,
        metadata_=body.metadata,
        integrations=body.integrations,
        result_files=[],
    )
    session.add(job)
    session.flush()
    jobstore.add_event(session, job.pk, f"Created fine-tuning job: {job.id}")
    jobstore.add_event(session, job.pk, "Validating training file: " + body.training_file)
    session.commit()
    _enqueue(session, job, VALIDATE_JOB_FILES)
    return job


_WANDB_FIELDS = {"project", "name", "entity", "tags"}


def _check_integrations(integrations: list[dict[str, Any]] | None) -> None:
    """Accept only what the worker carries out (workers.integrations): one wandb integration, its project
    named. Anything else is a 400, never silently ignored."""
    for i, item in enumerate(integrations or []):
        at = f"integrations[{i}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind != "wandb":
            raise bad_request(
                f"Integration type {kind!r} is not supported; this service logs a job's metrics to Weights & "
                "Biases only: {'type': 'wandb', 'wandb': {'project': ...}}.",
                param=f"{at}.type",
                code="invalid_integration",
            )
        if i > 0:
            raise bad_request("Only one wandb integration per job.", param=at, code="invalid_integration")
        wandb = item.get("wandb")
        if not isinstance(wandb, dict) or not isinstance(wandb.get("project"), str) or not wandb["project"]:
            raise bad_request(
                "A wandb integration needs wandb.project, the Weights & Biases project to log to.",
                param=f"{at}.wandb.project",
                code="invalid_integration",
            )
        unknown = sorted(set(wandb) - _WANDB_FIELDS)
        if unknown:
            raise bad_request(
                f"Unknown wandb field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_WANDB_FIELDS))}.",
                param=f"{at}.wandb.{unknown[0]}",
                code="invalid_integration",
            )
        for key in ("name", "entity"):
            if wandb.get(key) is not None and not isinstance(wandb[key], str):
                raise bad_request(f"wandb.{key} must be a string.", param=f"{at}.wandb.{key}")
        tags = wandb.get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            raise bad_request("wandb.tags must be a list of strings.", param=f"{at}.wandb.tags")


def _check_ceilings(openrft: dict[str, Any], settings: Settings) -> None:
    """The operator's ceilings on what one job may ask for (a clear 400 rather than a job that holds a worker
    for days)."""
    steps = (openrft.get("rl") or {}).get("max_steps")
    if isinstance(steps, int) and steps > settings.max_job_steps:
        raise bad_request(
            f"openrft.rl.max_steps is {steps}; this service runs at most {settings.max_job_steps} RL steps per job "
            "(OPENRFT_MAX_JOB_STEPS).",
            param="openrft.rl.max_steps",
        )
    prompt = openrft.get("system_prompt")
    if isinstance(prompt, str) and len(prompt) > settings.max_system_prompt_chars:
        raise bad_request(
            f"openrft.system_prompt has {len(prompt)} characters; this service takes up to "
            f"{settings.max_system_prompt_chars} (OPENRFT_MAX_SYSTEM_PROMPT_CHARS).",
            param="openrft.system_prompt",
        )


def _check_item_fields(
    session: Session,
    principal: Principal,
    settings: Settings,
    storage: Storage,
    file_id: str,
    references: list[tuple[str, Variable]],
) -> None:
    row = _file_for_job(session, principal, file_id, "training_file")
    try:
        fh = storage.open(row.storage_key)
    except OSError:
        return  # the file's own validation reports an unreadable file
    with fh:
        found = first_missing([v for _, v in references], bounded_lines(fh, settings.max_line_bytes))
    if found is None:
        return
    variable, line, data = found
    param = next(p for p, v in references if v is variable)
    fields = ", ".join(sorted(data)) or "none"
    raise bad_request(
        f"The grader uses {{{{ {variable.text} }}}}, but line {line} of {file_id} has no such field "
        f"(its fields: {fields}). Fix the field name in the grader or add it to every row.",
        param=param,
        code="invalid_grader",
    )


def _enqueue(session: Session, job: Job, task: str) -> None:
    try:
        job.task_id = enqueue(task, job.id)
        session.commit()
    except Exception:
        # The row is committed; the reaper re-enqueues jobs whose message never reached the broker.
        log.exception("could not enqueue %s for %s; the reaper will retry", task, job.id)
        session.rollback()


def get_job(session: Session, principal: Principal, job_id: str) -> Job:
    return owned_or_404(session, Job, job_id, principal.org_pk, param="fine_tuning_job_id")


def _invalid_state(job: Job, action: str) -> APIError:
    return bad_request(f"Job {job.id} is {job.status}; it cannot be {action}.", code="invalid_job_state")


def cancel_job(session: Session, job: Job) -> Job:
    if not jobstore.transition(session, job.id, "cancelled", from_=jobstore.ACTIVE):
        raise _invalid_state(job, "cancelled")
    jobstore.add_event(session, job.pk, "Job cancelled by the user.")
    session.commit()
    if job.task_id:
        revoke(job.task_id)  # a queued task never starts; a running one stops at its next control poll
    session.refresh(job)
    return job


def pause_job(session: Session, job: Job) -> Job:
    if job.status == "queued":
        if not jobstore.transition(session, job.id, "paused", from_=("queued",)):
            raise _invalid_state(job, "paused")
        jobstore.add_event(session, job.pk, "Job paused before it started.")
        if job.task_id:
            revoke(job.task_id)
    elif job.status == "running":
        job.pause_requested = True
        jobstore.add_event(
            session, job.pk, "Pause requested: the job saves a snapshot at the end of this step."
        )
    else:
        raise _invalid_state(job, "paused")
    session.commit()
    session.refresh(job)
    return job


def wait_until_paused(session: Session, job: Job, timeout: float, *, poll: float = 0.25) -> Job:
    """After a pause request on a running job: wait (at most ``timeout``) for its worker to stop at the
    next step boundary or generated token and save the snapshot, so the caller gets the job paused, as
    OpenAI's pause answers. A job that ends otherwise (it finished, failed or was cancelled meanwhile) is
    returned as it is."""
    deadline = time.monotonic() + timeout
    while job.status == "running" and job.pause_requested and time.monotonic() < deadline:
        time.sleep(poll)
        session.commit()  # a new transaction per look (a fresh snapshot; no connection held while asleep)
        session.refresh(job)
    return job


def resume_job(session: Session, job: Job) -> Job:
    """A paused job goes on; so does one that failed because its workers kept being lost, from its last
    snapshot, with a fresh crash budget."""
    if jobstore.resumable_after_failure(job):
        if not jobstore.transition(
            session, job.id, "queued", from_=("failed",), losses=0, error=None, finished_at=None
        ):
            raise _invalid_state(job, "resumed")
        jobstore.add_event(
            session,
            job.pk,
            "Job resumed from its last snapshot after its workers were lost; waiting for a worker.",
        )
    elif not jobstore.transition(session, job.id, "queued", from_=("paused",), pause_requested=False):
        raise _invalid_state(job, "resumed")
    else:
        jobstore.add_event(session, job.pk, "Job resumed; waiting for a worker.")
    session.commit()
    session.refresh(job)
    _enqueue(session, job, TRAIN_JOB)
    return job
