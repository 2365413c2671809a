"""/v1/fine_tuning/jobs: create, list (cursor + metadata filter), retrieve, cancel, pause, resume, events,
checkpoints."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from app.deps import PrincipalDep, SessionDep, SettingsDep, StorageDep
from app.errors import bad_request
from app.pagination import page_body, paginate
from app.ratelimit import RateLimited
from app.schemas.common import ERROR_RESPONSES, ListResponse
from app.schemas.jobs import Checkpoint as CheckpointOut
from app.schemas.jobs import Job as JobOut
from app.schemas.jobs import JobCreate
from app.schemas.jobs import JobEvent as JobEventOut
from app.serializers import checkpoint_object, event_object, job_object
from app.services import jobs as service
from core.db.models import Checkpoint, Job, JobEvent

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], responses=ERROR_RESPONSES)

_METADATA_PARAM = re.compile(r"^metadata\[(.+)\]$")


@router.post("", response_model=JobOut, dependencies=[Depends(RateLimited("jobs"))])
def create_fine_tuning_job(
    body: JobCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep, storage: StorageDep
) -> JobOut:
    return job_object(service.create_job(session, principal, settings, body, storage))


@router.get(
    "",
    response_model=ListResponse[JobOut],
    openapi_extra={
        "parameters": [
            {
                "name": "metadata",
                "in": "query",
                "required": False,
                "style": "deepObject",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "Filter on metadata: metadata[key]=value (all pairs must match).",
            }
        ]
    },
)
def list_fine_tuning_jobs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, object]:
    query = select(Job)
    for key, value in request.query_params.multi_items():
        match = _METADATA_PARAM.match(key)
        if match:
            query = query.where(Job.metadata_[match.group(1)].as_string() == value)
        elif key == "metadata":
            raise bad_request("Filter metadata as metadata[key]=value.", param="metadata")
    rows, has_more = paginate(
        session, query, Job, within=(Job.org_pk, principal.org_pk), after=after, limit=limit
    )
    return page_body([job_object(r) for r in rows], has_more, lambda j: j.id)


@router.get("/{fine_tuning_job_id}", response_model=JobOut)
def retrieve_fine_tuning_job(fine_tuning_job_id: str, principal: PrincipalDep, session: SessionDep) -> JobOut:
    return job_object(service.get_job(session, principal, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", response_model=JobOut)
def cancel_fine_tuning_job(fine_tuning_job_id: str, principal: PrincipalDep, session: SessionDep) -> JobOut:
    job = service.get_job(session, principal, fine_tuning_job_id)
    return job_object(service.cancel_job(session, job))


@router.post("/{fine_tuning_job_id}/pause", response_model=JobOut)
def pause_fine_tuning_job(
    fine_tuning_job_id: str, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> JobOut:
    job = service.get_job(session, principal, fine_tuning_job_id)
    job = service.pause_job(session, job)
    return job_object(service.wait_until_paused(session, job, settings.pause_wait_seconds))


@router.post("/{fine_tuning_job_id}/resume", response_model=JobOut)
def resume_fine_tuning_job(fine_tuning_job_id: str, principal: PrincipalDep, session: SessionDep) -> JobOut:
    job = service.get_job(session, principal, fine_tuning_job_id)
    return job_object(service.resume_job(session, job))


@router.get("/{fine_tuning_job_id}/events", response_model=ListResponse[JobEventOut])
def list_fine_tuning_events(
    fine_tuning_job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, object]:
    job = service.get_job(session, principal, fine_tuning_job_id)
    rows, has_more = paginate(
        session, select(JobEvent), JobEvent, within=(JobEvent.job_pk, job.pk), after=after, limit=limit
    )
    return page_body([event_object(r) for r in rows], has_more, lambda e: e.id)


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=ListResponse[CheckpointOut])
def list_fine_tuning_checkpoints(
    fine_tuning_job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, object]:
    job = service.get_job(session, principal, fine_tuning_job_id)
    rows, has_more = paginate(
        session, select(Checkpoint), Checkpoint, within=(Checkpoint.job_pk, job.pk), after=after, limit=limit
    )
    return page_body([checkpoint_object(r, job.id) for r in rows], has_more, lambda c: c.id)
