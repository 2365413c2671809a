"""The one organization-scoped lookup: a row by its public id, only if it belongs to the organization."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import File, FineTunedModel, Job

Owned = TypeVar("Owned", File, Job, FineTunedModel)


def owned(session: Session, model: type[Owned], ident: str, org_pk: int) -> Owned | None:
    """The ``model`` row with id ``ident`` of organization ``org_pk``, or None: another tenant's rows do not
    exist for the caller (an id of theirs answers exactly like an unknown one)."""
    return session.scalar(select(model).where(model.id == ident, model.org_pk == org_pk))
