"""Streaming multipart upload: the file part goes straight to storage as it arrives, counted and hashed,
and the upload is refused the moment it passes the size limit, so a 2 GB body is never buffered."""

from __future__ import annotations

from dataclasses import dataclass, field

import python_multipart as multipart
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.errors import APIError
from core.storage import ObjectWriter, Storage, StorageError

_MAX_FIELD_BYTES = 64 * 1024


@dataclass
class UploadedFile:
    filename: str
    bytes: int
    sha256: str


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _Collector:
    """Parser callbacks; file bytes are queued and written by the async loop between parser writes."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.file_part: _Part | None = None
        self.pending: list[bytes] = []
        self.file_done = False
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def on_part_begin(self) -> None:
        self._part = _Part()
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            if self.file_part is not None:
                raise APIError(400, "Only one file may be uploaded per request.", param="file")
            self._part.filename = options[b"filename"].decode("utf-8", "replace")
            self.file_part = self._part

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is self.file_part:
            self.pending.append(bytes(data[start:end]))
        else:
            if len(self._part.data) + (end - start) > _MAX_FIELD_BYTES:
                raise APIError(400, f"Form field '{self._part.name}' is too large.", param=self._part.name)
            self._part.data.extend(data[start:end])

    def on_part_end(self) -> None:
        if self._part is self.file_part:
            self.file_done = True
        elif self._part.name:
            self.fields[self._part.name] = self._part.data.decode("utf-8", "replace")


async def receive_upload(
    request: Request, storage: Storage, storage_key: str, max_bytes: int
) -> tuple[UploadedFile, dict[str, str]]:
    """Parse a multipart/form-data request, streaming its file part to ``storage`` under ``storage_key``.

    Returns the stored file and the other form fields. Nothing is left in storage on any error."""
    content_type = request.headers.get("content-type", "")
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise APIError(
            400, "Uploads must be multipart/form-data with a 'file' part and a 'purpose' field.", param="file"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + _MAX_FIELD_BYTES * 4:
        raise _too_large(max_bytes)

    collector = _Collector()
    callbacks = {
        "on_part_begin": collector.on_part_begin,
        "on_part_data": collector.on_part_data,
        "on_part_end": collector.on_part_end,
        "on_header_field": collector.on_header_field,
        "on_header_value": collector.on_header_value,
        "on_header_end": collector.on_header_end,
        "on_headers_finished": collector.on_headers_finished,
    }
    parser = multipart.MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    writer: ObjectWriter | None = None
    committed = False
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if collector.pending:
                if writer is None:
                    writer = await run_in_threadpool(storage.writer, storage_key)
                data = b"".join(collector.pending)
                collector.pending.clear()
                if writer.bytes_written + len(data) > max_bytes:
                    raise _too_large(max_bytes)
                await run_in_threadpool(writer.write, data)
        parser.finalize()
        if collector.file_part is None or not collector.file_done:
            raise APIError(400, "The request has no 'file' part.", param="file")
        if writer is None:  # an empty file: no data callback ever fired
            writer = await run_in_threadpool(storage.writer, storage_key)
        size = writer.bytes_written
        digest = await run_in_threadpool(writer.commit)
        committed = True
    except FormParserError as exc:
        raise APIError(400, f"Invalid multipart body: {exc}", param="file") from exc
    except StorageError as exc:
        raise APIError(507, f"The file could not be stored: {exc}", code="storage_error") from exc
    finally:
        if writer is not None and not committed:
            writer.abort()
    return UploadedFile(collector.file_part.filename or "upload", size, digest), collector.fields


def _too_large(max_bytes: int) -> APIError:
    return APIError(
        413,
        f"File is too large: the limit is {max_bytes} bytes (OPENRFT_MAX_UPLOAD_BYTES).",
        param="file",
        code="file_too_large",
    )
