"""``client.files``: upload (from a path, bytes or a file object, optionally validated locally first), list,
retrieve, content, delete."""

# ruff: noqa: ASYNC109  (a per-call HTTP timeout, like openai-python; not an asyncio deadline)

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from openrft._base_client import NOT_GIVEN, FilesFactory, NotGiven, Timeout, make_options, parse_model
from openrft._exceptions import FileValidationError, OpenRFTError
from openrft._resource import AsyncResource, SyncResource, quote_id
from openrft.pagination import AsyncPaginator, SyncCursorPage
from openrft.types.file_deleted import FileDeleted
from openrft.types.file_object import FileObject
from openrft.validation import Method, ValidationReport, validate_stream

__all__ = ["AsyncFiles", "FileInput", "Files", "validate_upload"]

FileInput = str | os.PathLike[str] | bytes | IO[bytes] | tuple[str, bytes | IO[bytes]]
_CONTENT_TYPE = "application/jsonl"


def _split(file: FileInput, filename: str | None) -> tuple[str, Path | bytes | IO[bytes]]:
    if isinstance(file, tuple):
        name, source = file
        return filename or name, source
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        if not path.is_file():
            raise OpenRFTError(f"No such file: {path}")
        return filename or path.name, path
    if isinstance(file, bytes):
        return filename or "upload.jsonl", file
    return filename or Path(str(getattr(file, "name", "upload.jsonl"))).name, file


def validate_upload(file: FileInput, method: Method) -> ValidationReport:
    """Check a fine-tuning JSONL file locally, with the server's own line-numbered rules."""
    _, source = _split(file, None)
    if isinstance(source, Path):
        with source.open("rb") as fh:
            return validate_stream(fh, method)
    if isinstance(source, bytes):
        return validate_stream(io.BytesIO(source), method)
    start = source.tell()
    source.seek(0)  # the whole stream is what gets uploaded (httpx sends file objects from their start)
    try:
        return validate_stream(source, method)
    finally:
        source.seek(start)


def _files_factory(name: str, source: Path | bytes | IO[bytes]) -> FilesFactory:
    # A path is reopened on every attempt; a file object is rewound (httpx sends it from its start).
    def factory(stack: ExitStack) -> Mapping[str, Any]:
        handle = stack.enter_context(source.open("rb")) if isinstance(source, Path) else source
        return {"file": (name, handle, _CONTENT_TYPE)}

    return factory


def _upload_options(
    file: FileInput,
    purpose: str,
    validate: Method | None,
    filename: str | None,
    expires_after_seconds: int | None,
    kw: dict[str, Any],
) -> Any:
    name, source = _split(file, filename)
    if validate is not None:
        report = validate_upload(file, validate)
        if not report.ok:
            raise FileValidationError(report, f"file {name}")
    data = {"purpose": purpose}
    if expires_after_seconds is not None:
        data["expires_after[anchor]"] = "created_at"
        data["expires_after[seconds]"] = str(expires_after_seconds)
    return make_options("POST", "/files", files=_files_factory(name, source), data=data, **kw)


def _list_params(
    purpose: str | None, limit: int | None, order: str | None, after: str | None
) -> dict[str, Any]:
    return {
        k: v for k, v in {"purpose": purpose, "limit": limit, "order": order, "after": after}.items() if v
    }


class Files(SyncResource):
    def create(
        self,
        file: FileInput,
        *,
        purpose: str = "fine-tune",
        validate: Method | None = None,
        filename: str | None = None,
        expires_after_seconds: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> FileObject:
        """Upload a file: a path, bytes, a binary file object (sent whole, from its start) or a
        ``(filename, content)`` tuple. With ``validate="reinforcement"`` (or "supervised", "dpo") the JSONL is
        checked locally first and :class:`FileValidationError` lists its bad lines before any byte is sent."""
        options = _upload_options(
            file,
            purpose,
            validate,
            filename,
            expires_after_seconds,
            {"extra_headers": extra_headers, "timeout": timeout},
        )
        return parse_model(self._client.request(options), FileObject)

    def validate(self, file: FileInput, method: Method = "reinforcement") -> ValidationReport:
        """Local validation only (no request)."""
        return validate_upload(file, method)

    def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> SyncCursorPage[FileObject]:
        return self._list("/files", FileObject, _list_params(purpose, limit, order, after), timeout=timeout)

    def retrieve(self, file_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FileObject:
        return self._client.get(f"/files/{quote_id(file_id)}", FileObject, timeout=timeout)

    def content(self, file_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> bytes:
        options = make_options("GET", f"/files/{quote_id(file_id)}/content", timeout=timeout)
        return self._client.request(options).content

    def delete(self, file_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FileDeleted:
        return self._client.delete(f"/files/{quote_id(file_id)}", FileDeleted, timeout=timeout)


class AsyncFiles(AsyncResource):
    async def create(
        self,
        file: FileInput,
        *,
        purpose: str = "fine-tune",
        validate: Method | None = None,
        filename: str | None = None,
        expires_after_seconds: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> FileObject:
        options = _upload_options(
            file,
            purpose,
            validate,
            filename,
            expires_after_seconds,
            {"extra_headers": extra_headers, "timeout": timeout},
        )
        return parse_model(await self._client.request(options), FileObject)

    def validate(self, file: FileInput, method: Method = "reinforcement") -> ValidationReport:
        return validate_upload(file, method)

    def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[FileObject]:
        return self._list("/files", FileObject, _list_params(purpose, limit, order, after), timeout=timeout)

    async def retrieve(self, file_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FileObject:
        return await self._client.get(f"/files/{quote_id(file_id)}", FileObject, timeout=timeout)

    async def content(self, file_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> bytes:
        options = make_options("GET", f"/files/{quote_id(file_id)}/content", timeout=timeout)
        return (await self._client.request(options)).content

    async def delete(self, file_id: str, *, timeout: Timeout | NotGiven = NOT_GIVEN) -> FileDeleted:
        return await self._client.delete(f"/files/{quote_id(file_id)}", FileDeleted, timeout=timeout)
