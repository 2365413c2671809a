"""Object storage behind a small interface; the default keeps objects in a local directory.

Writes are atomic (temporary file, fsync, rename) so a failed upload or a full disk never leaves a
half-written object where a good one was.

Directories (adapters, merged weights, a job's resumable state) are stored as one uncompressed tar object
each, streamed in and out, never read into memory. One object rather than a key prefix of files: it appears
at once and whole (a reader never sees half of a new snapshot beside half of the old one, on any backend),
it needs no listing in the interface, and it is one upload instead of many small ones. Weights do not
compress, so the tar is not gzipped. Every upload gets a new key, so an object never changes once written:
caches of it never go stale and a worker that lost its job cannot overwrite the new holder's object.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

log = logging.getLogger("openrft.storage")


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


# -- files and directories as objects -----------------------------------------------------------------------

_BLOCK = 1024 * 1024

OBJECT_MARKER = ".openrft-object"
"""A file in a local directory that is a copy of a stored directory object, holding the object's key: the
directory that is looked up by that key and holds it is that object (the writer's own copy, or a copy
fetched before), so nothing is copied again. It is never part of the object itself."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    bytes: int


def put_file(storage: Storage, key: str, path: Path) -> StoredObject:
    """Upload a local file as ``key``, streamed."""
    writer = storage.writer(key)
    try:
        with path.open("rb") as fh:
            while block := fh.read(_BLOCK):
                writer.write(block)
    except BaseException:
        writer.abort()
        raise
    return StoredObject(key, writer.commit(), writer.bytes_written)


def put_dir(storage: Storage, key: str, src: Path) -> StoredObject:
    """Upload the directory ``src`` as the tar object ``key``, streamed, then mark ``src`` as holding it."""

    def skip_marker(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name == OBJECT_MARKER else info

    if not src.is_dir():
        raise StorageError(f"{src.name} is not a directory")
    writer = storage.writer(key)
    try:
        # The writer is write-only, which is all a tar stream ("w|") asks of its file.
        with tarfile.open(fileobj=cast(IO[bytes], writer), mode="w|", bufsize=_BLOCK) as tar:
            tar.add(src, arcname=".", filter=skip_marker)
    except (OSError, tarfile.TarError) as exc:  # reading the local files
        writer.abort()
        raise StorageError(f"could not read {src.name} to store it: {exc}") from exc
    except BaseException:
        writer.abort()
        raise
    stored = StoredObject(key, writer.commit(), writer.bytes_written)
    try:
        mark(src, key)
    except OSError:  # a full local disk: the object is stored all the same, only the fast path is lost
        log.warning("could not mark %s as holding %s", src, key, exc_info=True)
    return stored


def get_dir(storage: Storage, key: str, dest: Path) -> Path:
    """Extract the tar object ``key`` into ``dest`` (replacing what is there) and mark it. The files land
    in a temporary sibling first: a failed or killed download leaves ``dest`` as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{dest.name}-", dir=dest.parent))
    try:
        with storage.open(key) as fh, tarfile.open(fileobj=fh, mode="r|", bufsize=_BLOCK) as tar:
            tar.extractall(tmp, filter="data")  # "data": no absolute paths, no escaping links
        mark(tmp, key)
        if not holds(dest, key):  # else another process fetched the same (immutable) object meanwhile
            _replace_dir(tmp, dest)
    except tarfile.TarError as exc:
        raise StorageError(f"object {key!r} is not a readable directory archive: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"could not fetch {key!r} from storage: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Put ``tmp`` at ``dest``: a directory cannot be renamed over a non-empty one, so the old one moves
    aside first (no exists() check before it, which another process could make stale)."""
    aside = dest.with_name(f".old-{dest.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        dest.rename(aside)
    except FileNotFoundError:  # nothing there yet
        pass
    tmp.rename(dest)
    shutil.rmtree(aside, ignore_errors=True)


def mark(path: Path, key: str) -> None:
    (path / OBJECT_MARKER).write_text(key)


def holds(path: Path, key: str) -> bool:
    """Whether the local directory ``path`` is a copy of the stored object ``key``."""
    try:
        return (path / OBJECT_MARKER).read_text() == key
    except OSError:
        return False


class DirectoryCache:
    """Local copies of stored directory objects under ``root``, one per key, fetched on first use."""

    def __init__(self, storage: Storage, root: Path) -> None:
        self.storage = storage
        self.root = root
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path_for(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.root / f"{digest}-{Path(key).stem}"

    def local_dir(self, key: str, hint: Path | None = None) -> Path:
        """A local directory holding ``key``: ``hint`` when it does (the machine that wrote it: no copy),
        else the cached copy, downloaded the first time (once, however many threads ask at once)."""
        if hint is not None and holds(hint, key):
            return hint
        dest = self.path_for(key)
        if holds(dest, key):
            return dest
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if not holds(dest, key):
                get_dir(self.storage, key, dest)
        return dest

    def evict(self, key: str) -> None:
        shutil.rmtree(self.path_for(key), ignore_errors=True)
