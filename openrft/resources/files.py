"""``client.files``: the SDK's resource, with ``create`` taking the file as a path, bytes, a file object or a
``(filename, content)`` tuple, ``purpose`` defaulting to fine-tune, and optionally checking the JSONL locally
with the server's rules before any byte is sent. List, retrieve, content and delete are the SDK's."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from openai import Omit, omit
from openai._types import FileTypes
from openai.resources import files as sdk
from openai.types import FileObject
from typing_extensions import Unpack

from openrft._exceptions import FileValidationError, OpenRFTError
from openrft._request import RequestExtras
from openrft.validation import Method, ValidationReport, validate_stream

if TYPE_CHECKING:
    from openai.types.file_create_params import ExpiresAfter

__all__ = ["AsyncFiles", "FileInput", "Files", "validate_upload"]

# What the SDK takes, and a path given as a string.
FileInput = FileTypes | str
_CONTENT_TYPE = "application/jsonl"


def _split(file: FileInput, filename: str | None) -> tuple[str, Path | bytes | IO[bytes]]:
    if isinstance(file, tuple):
        name, source = file[0], file[1]
        return filename or name or "upload.jsonl", source if not isinstance(source, os.PathLike) else Path(
            source
        )
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
    source.seek(0)  # the whole stream is what gets uploaded (it is sent from its start)
    try:
        return validate_stream(source, method)
    finally:
        source.seek(start)


def _upload(
    file: FileInput,
    purpose: str,
    validate: Method | None,
    filename: str | None,
    expires_after: Any,
    expires_after_seconds: int | None,
) -> dict[str, Any]:
    """The SDK's ``create`` arguments, after the local check. The SDK reads a path whole and sends a file
    object from its start, so a retried upload sends the same bytes."""
    name, source = _split(file, filename)
    if validate is not None:
        report = validate_upload(file, validate)
        if not report.ok:
            raise FileValidationError(report, f"file {name}")
    if expires_after_seconds is not None:
        expires_after = {"anchor": "created_at", "seconds": expires_after_seconds}
    return {"file": (name, source, _CONTENT_TYPE), "purpose": purpose, "expires_after": expires_after}


class Files(sdk.Files):
    def create(
        self,
        file: FileInput,
        *,
        purpose: str = "fine-tune",
        validate: Method | None = None,
        filename: str | None = None,
        expires_after: ExpiresAfter | Omit = omit,
        expires_after_seconds: int | None = None,
        **extras: Unpack[RequestExtras],
    ) -> FileObject:
        """Upload a file: a path, bytes, a binary file object (sent whole, from its start) or a
        ``(filename, content)`` tuple. With ``validate="reinforcement"`` (or "supervised", "dpo") the JSONL is
        checked locally first and :class:`FileValidationError` lists its bad lines before any byte is sent."""
        upload = _upload(file, purpose, validate, filename, expires_after, expires_after_seconds)
        return super().create(**upload, **extras)

    def validate(self, file: FileInput, method: Method = "reinforcement") -> ValidationReport:
        """Local validation only (no request)."""
        return validate_upload(file, method)


class AsyncFiles(sdk.AsyncFiles):
    async def create(
        self,
        file: FileInput,
        *,
        purpose: str = "fine-tune",
        validate: Method | None = None,
        filename: str | None = None,
        expires_after: ExpiresAfter | Omit = omit,
        expires_after_seconds: int | None = None,
        **extras: Unpack[RequestExtras],
    ) -> FileObject:
        upload = _upload(file, purpose, validate, filename, expires_after, expires_after_seconds)
        return await super().create(**upload, **extras)

    def validate(self, file: FileInput, method: Method = "reinforcement") -> ValidationReport:
        return validate_upload(file, method)
