"""/v1/files: streamed uploads, listing, retrieval, content and deletion, scoped to the caller's org."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.deps import PrincipalDep, SessionDep, SettingsDep, StorageDep, owned_or_404
from app.errors import APIError
from app.pagination import page_body, paginate
from app.ratelimit import RateLimited
from app.schemas.common import ERROR_RESPONSES, ListResponse
from app.schemas.files import UPLOAD_PURPOSES, FileDeleted, FileObject
from app.serializers import file_object
from app.uploads import receive_upload
from core import ids
from core.db.base import utcnow
from core.db.models import File
from core.storage import StorageError

router = APIRouter(prefix="/files", tags=["files"], responses=ERROR_RESPONSES)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
                    },
                }
            }
        },
    }
}


@router.post(
    "", response_model=FileObject, openapi_extra=_UPLOAD_BODY, dependencies=[Depends(RateLimited("files"))]
)
async def create_file(
    request: Request, principal: PrincipalDep, session: SessionDep, settings: SettingsDep, storage: StorageDep
) -> FileObject:
    file_id = ids.file_id()
    storage_key = f"{principal.org_id}/{file_id}"
    quota = settings.max_org_storage_bytes
    kept = _stored_bytes(session, principal.org_pk) if quota else 0
    if quota and kept >= quota:  # refused before a byte of the body is read
        raise _over_quota(kept, quota)
    session.commit()  # no transaction (nor pooled connection) held while the body streams in
    uploaded, fields = await receive_upload(request, storage, storage_key, settings.max_upload_bytes)
    try:
        if quota and kept + uploaded.bytes > quota:
            raise _over_quota(kept + uploaded.bytes, quota)
        purpose = fields.get("purpose")
        if not purpose:
            raise APIError(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise APIError(
                400,
                f"Invalid value for 'purpose': {purpose!r}. Expected one of {', '.join(UPLOAD_PURPOSES)}.",
                param="purpose",
            )
        if uploaded.bytes == 0:
            raise APIError(400, "The uploaded file is empty.", param="file", code="empty_file")
        expires_at = None
        if "expires_after[seconds]" in fields:
            seconds = fields["expires_after[seconds]"]
            if not seconds.isdigit() or not 3600 <= int(seconds) <= 2592000:
                raise APIError(
                    400, "expires_after[seconds] must be between 3600 and 2592000.", param="expires_after"
                )
            expires_at = utcnow() + timedelta(seconds=int(seconds))
        row = File(
            id=file_id,
            org_pk=principal.org_pk,
            filename=uploaded.filename[:512],
            purpose=purpose,
            bytes=uploaded.bytes,
            sha256=uploaded.sha256,
            status="processed",
            storage_key=storage_key,
            expires_at=expires_at,
        )
        session.add(row)
        session.commit()
    except BaseException:
        storage.delete(storage_key)  # nothing is kept for a refused upload
        raise
    return file_object(row)


def _stored_bytes(session: Session, org_pk: int) -> int:
    return int(
        session.scalar(select(func.coalesce(func.sum(File.bytes), 0)).where(File.org_pk == org_pk)) or 0
    )


def _over_quota(total: int, quota: int) -> APIError:
    return APIError(
        400,
        f"This upload would bring your organization's files to {total} bytes, over its storage quota of {quota} "
        "bytes (OPENRFT_MAX_ORG_STORAGE_BYTES). Delete files you no longer need (DELETE /v1/files/{file_id}).",
        param="file",
        code="storage_quota_exceeded",
    )


@router.get("", response_model=ListResponse[FileObject])
def list_files(
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict[str, object]:
    query = select(File)
    if purpose:
        query = query.where(File.purpose == purpose)
    rows, has_more = paginate(
        session, query, File, within=(File.org_pk, principal.org_pk), after=after, limit=limit, order=order
    )
    return page_body([file_object(r) for r in rows], has_more, lambda f: f.id)


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, principal: PrincipalDep, session: SessionDep) -> FileObject:
    return file_object(owned_or_404(session, File, file_id, principal.org_pk))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(
    file_id: str, principal: PrincipalDep, session: SessionDep, storage: StorageDep
) -> FileDeleted:
    row = owned_or_404(session, File, file_id, principal.org_pk)
    session.delete(row)
    session.commit()
    # Jobs copy their data into their own working directory, so deleting an upload never breaks a job.
    storage.delete(row.storage_key)
    return FileDeleted(id=file_id, deleted=True)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
def retrieve_file_content(
    file_id: str, principal: PrincipalDep, session: SessionDep, storage: StorageDep
) -> StreamingResponse:
    row = owned_or_404(session, File, file_id, principal.org_pk)
    try:
        handle = storage.open(row.storage_key)
    except StorageError as exc:
        raise APIError(500, f"The content of {file_id} is unavailable: {exc}", code="storage_error") from exc

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(1024 * 1024):
                yield block

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"content-length": str(row.bytes), "content-disposition": f'attachment; filename="{row.id}"'},
    )
