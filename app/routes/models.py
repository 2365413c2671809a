"""/v1/models: base models available here, plus the caller's fine-tuned models. Their checkpoints are models
too (retrieve, chat, delete) but, as at OpenAI, not listed: the job's checkpoints list names them."""

from __future__ import annotations

import anyio.from_thread
from fastapi import APIRouter, Request
from sqlalchemy import select

from app.deps import PrincipalDep, SessionDep, SettingsDep, owned_or_404
from app.errors import APIError
from app.inference import forget_stored_model
from app.schemas.common import ERROR_RESPONSES, ErrorResponse, ListResponse
from app.schemas.models import Model, ModelDeleted
from app.serializers import ts
from core.db.models import FineTunedModel
from core.settings import Settings

router = APIRouter(prefix="/models", tags=["models"], responses=ERROR_RESPONSES)

# Base models exist from the service's start; a fixed timestamp keeps responses stable.
_BASE_CREATED = 1735689600


def _base_models(settings: Settings) -> list[Model]:
    return [
        Model(id=name, created=_BASE_CREATED, owned_by="openrft") for name in sorted(settings.all_base_models)
    ]


def _ft_model(row: FineTunedModel) -> Model:
    return Model(
        id=row.id,
        created=ts(row.created_at) or 0,
        owned_by=row.organization.name,
        parent=row.parent,
        root=row.base_model,
    )


@router.get("", response_model=ListResponse[Model])
def list_models(principal: PrincipalDep, session: SessionDep, settings: SettingsDep) -> dict[str, object]:
    rows = session.scalars(
        select(FineTunedModel)
        .where(FineTunedModel.org_pk == principal.org_pk, FineTunedModel.kind == "final")
        .order_by(FineTunedModel.pk)
    ).all()
    data = _base_models(settings) + [_ft_model(r) for r in rows]
    return {"object": "list", "data": data, "has_more": False}


@router.get("/{model:path}", response_model=Model)
def retrieve_model(model: str, principal: PrincipalDep, session: SessionDep, settings: SettingsDep) -> Model:
    if model in settings.all_base_models:
        return next(m for m in _base_models(settings) if m.id == model)
    row = owned_or_404(session, FineTunedModel, model, principal.org_pk, param="model")
    return _ft_model(row)


@router.delete(
    "/{model:path}",
    response_model=ModelDeleted,
    responses={
        403: {"model": ErrorResponse, "description": "A base model: only fine-tuned models can be deleted"}
    },
)
def delete_model(
    model: str, request: Request, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> ModelDeleted:
    if model in settings.all_base_models:
        # It exists (a 404 would say otherwise); it is the service's, not the caller's, to delete.
        raise APIError(
            403,
            f"Model {model!r} is a base model of this service; only fine-tuned models can be deleted.",
            param="model",
            code="model_not_deletable",
        )
    row = owned_or_404(session, FineTunedModel, model, principal.org_pk, param="model")
    gone = [row]
    if row.kind == "final" and row.job_pk is not None:  # its job's checkpoints go with it
        gone += session.scalars(
            select(FineTunedModel).where(
                FineTunedModel.job_pk == row.job_pk,
                FineTunedModel.org_pk == principal.org_pk,
                FineTunedModel.kind == "checkpoint",
            )
        ).all()
    removed = [(r.id, r.storage_key) for r in gone]
    for r in gone:
        session.delete(r)
    session.commit()
    serving = getattr(request.app.state, "serving", None)
    for name, storage_key in removed:
        if serving is not None:  # free the adapter in engines that loaded it (no engine is started for this)
            anyio.from_thread.run(serving.unload, name)
        if storage_key:
            forget_stored_model(settings, storage_key)
    return ModelDeleted(id=model, deleted=True)
