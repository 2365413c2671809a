"""Object storage behind a small interface; the default keeps objects in a local directory.

Writes are atomic (temporary file, fsync, rename) so a failed upload or a full disk never leaves a
half-written object where a good one was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Protocol


class StorageError(Exception):
    """The storage backend could not complete an operation (disk full, unwritable, missing)."""


class ObjectWriter(Protocol):
    bytes_written: int

    def write(self, data: bytes) -> None: ...
    def commit(self) -> str:
        """Make the object visible; returns its SHA-256 hex digest."""

    def abort(self) -> None: ...


class Storage(Protocol):
    def writer(self, key: str) -> ObjectWriter: ...
    def open(self, key: str) -> BinaryIO: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def copy_to(self, key: str, dest: Path) -> None:
        """Copy an object to a local path (workers hand files to the trainer this way)."""


class _LocalWriter:
    def __init__(self, final: Path) -> None:
        self._final = final
        self._hash = hashlib.sha256()
        self.bytes_written = 0
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
        except OSError as exc:
            raise StorageError(f"storage is not writable: {exc.strerror}") from exc
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            raise StorageError(f"could not write to storage: {exc.strerror}") from exc
        self._hash.update(data)
        self.bytes_written += len(data)

    def commit(self) -> str:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, self._final)
        except OSError as exc:
            self.abort()
            raise StorageError(f"could not write to storage: {exc.strerror}") from exc
        return self._hash.hexdigest()

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            self._tmp.unlink(missing_ok=True)


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageError(f"invalid storage key {key!r}")
        return path

    def writer(self, key: str) -> _LocalWriter:
        return _LocalWriter(self._path(key))

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise StorageError(f"object {key!r} is missing from storage") from exc

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def remove_stale_uploads(self, older_than_s: float) -> int:
        """Delete the temporary files of uploads that never finished (an API process killed mid-upload);
        an upload in progress keeps writing, so its file is never that old. Returns how many went."""
        cutoff = time.time() - older_than_s
        removed = 0
        for tmp in self.root.rglob(".upload-*"):
            try:
                if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except OSError:  # raced with its own writer finishing, or unreadable: leave it
                continue
        return removed

    def copy_to(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        with self.open(key) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        os.replace(tmp, dest)


def get_storage() -> Storage:
    from core.settings import get_settings

    return LocalStorage(get_settings().files_dir)
