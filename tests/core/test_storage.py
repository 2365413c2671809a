"""Directories as storage objects: streamed tar in and out, marked local copies, a cache that fetches once."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import pytest

from core.storage import (
    OBJECT_MARKER,
    DirectoryCache,
    LocalStorage,
    StorageError,
    get_dir,
    holds,
    put_dir,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != OBJECT_MARKER
    }


def _adapter(path: Path, weights: bytes = b"w" * 3000) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "adapter_config.json").write_text('{"r": 8}')
    (path / "adapter_model.safetensors").write_bytes(weights)
    (path / "sub" / "tokenizer.json").write_text("{}")
    return path


class CountingStorage(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opens = 0
        self.largest_write = 0

    def open(self, key: str):  # type: ignore[no-untyped-def]
        self.opens += 1
        return super().open(key)

    def writer(self, key: str):  # type: ignore[no-untyped-def]
        writer = super().writer(key)
        write = writer.write

        def tracked(data: bytes) -> None:
            self.largest_write = max(self.largest_write, len(data))
            write(data)

        writer.write = tracked  # type: ignore[method-assign]
        return writer


def test_a_directory_round_trips_streamed_and_both_copies_are_marked(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path / "store")
    src = _adapter(tmp_path / "src", weights=bytes(range(256)) * 12_000)  # 3 MB
    stored = put_dir(storage, "org/jobs/j/model-x.tar", src)
    assert stored.bytes == storage.size(stored.key) and len(stored.sha256) == 64
    assert storage.largest_write <= 1 << 20  # streamed in blocks, never the whole directory at once
    assert holds(src, stored.key)
    with storage.open(stored.key) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        assert OBJECT_MARKER not in {Path(m.name).name for m in tar}  # the marker is not part of the object

    dest = get_dir(storage, stored.key, tmp_path / "elsewhere" / "copy")
    assert _tree(dest) == _tree(src) and holds(dest, stored.key)
    assert not holds(dest, "org/jobs/j/model-other.tar")


def test_a_failed_fetch_leaves_the_old_directory_in_place(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    dest = _adapter(tmp_path / "machine" / "dest")
    before = _tree(dest)
    with pytest.raises(StorageError):
        get_dir(storage, "org/missing.tar", dest)
    (tmp_path / "store" / "org").mkdir(parents=True, exist_ok=True)
    (tmp_path / "store" / "org" / "broken.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(StorageError):
        get_dir(storage, "org/broken.tar", dest)
    assert _tree(dest) == before
    assert [p.name for p in dest.parent.iterdir()] == ["dest"]  # no temporary directory left behind


def test_an_archive_that_escapes_its_directory_is_refused(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    writer = storage.writer("org/evil.tar")
    writer.write(buf.getvalue())
    writer.commit()
    with pytest.raises(StorageError):
        get_dir(storage, "org/evil.tar", tmp_path / "x" / "dest")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "x" / "escaped.txt").exists()


def test_the_cache_uses_the_writers_copy_else_fetches_once(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path / "store")
    src = _adapter(tmp_path / "worker" / "final")
    key = put_dir(storage, "org/jobs/j/model-a.tar", src).key
    cache = DirectoryCache(storage, tmp_path / "cache")

    assert cache.local_dir(key, src) == src and storage.opens == 0  # the machine that wrote it: no copy

    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cache.local_dir(key))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and storage.opens == 1  # four requests at once, one download
    copy = results[0]
    assert copy.is_relative_to(tmp_path / "cache") and _tree(copy) == _tree(src)
    assert cache.local_dir(key, tmp_path / "nowhere") == copy and storage.opens == 1

    # a directory at the recorded path that holds another object (another attempt's) is not used
    newer = put_dir(storage, "org/jobs/j/model-b.tar", _adapter(tmp_path / "other" / "final", b"new")).key
    got = cache.local_dir(newer, src)
    assert got != src and (got / "adapter_model.safetensors").read_bytes() == b"new"

    cache.evict(key)
    assert not copy.exists()
