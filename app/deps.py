"""Request dependencies as Annotated aliases: a DB session, the calling organization, settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth import Principal, find_key, principal_for
from app.errors import APIError, not_found
from core.db.models import File, FineTunedModel, Job
from core.db.scoped import Owned, owned
from core.db.session import get_sessionmaker
from core.settings import Settings, get_settings
from core.storage import Storage, get_storage


def get_session() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]


def _unauthorized(message: str) -> APIError:
    return APIError(
        401,
        message,
        code="invalid_api_key",
        type="invalid_request_error",
        headers={"www-authenticate": "Bearer"},
    )


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized(
            "You didn't provide an API key. Provide it in the Authorization header (Authorization: Bearer YOUR_KEY)."
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _unauthorized("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
    return token


# Only documents the scheme in OpenAPI (Swagger's "Authorize"); bearer_token reads the header, with
# OpenAI's error messages.
_bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearerAuth", description="An API key: Authorization: Bearer sk-openrft-..."
)


def get_principal(
    request: Request,
    session: SessionDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)] = None,
) -> Principal:
    token = bearer_token(request)
    row = find_key(session, token)
    if row is None:
        raise _unauthorized("Incorrect API key provided (unknown or revoked).")
    principal = principal_for(row)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


_KINDS: dict[type, str] = {File: "file", Job: "job", FineTunedModel: "model"}


def owned_or_404(
    session: Session, model: type[Owned], ident: str, org_pk: int, *, param: str | None = None
) -> Owned:
    """:func:`core.db.scoped.owned`, or OpenAI's 404 for an unknown id (another tenant's included)."""
    row = owned(session, model, ident, org_pk)
    if row is None:
        raise not_found(_KINDS[model], ident, param=param)
    return row
