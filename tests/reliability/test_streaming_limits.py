"""Over a real socket to a live API: a 2 GB upload and an endless JSON body are refused at the configured
limits while they stream, the server never buffers them (its RSS stays flat) and nothing is left in
storage."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.reliability.conftest import Service

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("streaming-limits")]  # one live API

UPLOAD_LIMIT = 64 << 20
REQUEST_LIMIT = 4 << 20
TWO_GB = 2 << 30
CHUNK = 256 << 10


@pytest.fixture(scope="module")
def api(make_service, pg_url) -> Service:
    svc = make_service(
        database_url=pg_url,
        redis_url=None,
        extra={
            "OPENRFT_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
            "OPENRFT_MAX_REQUEST_BYTES": str(REQUEST_LIMIT),
        },
    )
    svc.start_api()
    return svc


class RssSampler:
    """Peak resident memory of a process, sampled every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


def _stream(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send ``head`` then the chunks with chunked transfer encoding until the server answers; returns the
    response and how many body bytes were sent before it did."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 << 10)
    sent = 0
    response = b""
    try:
        sock.sendall(head)
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _complete(response):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            response += data
    finally:
        sock.close()
    return response, sent


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def _zeros(total: int) -> Iterator[bytes]:
    block = b"0" * CHUNK
    for _ in range(total // CHUNK):
        yield block


def _storage_files(svc: Service) -> list[str]:
    return sorted(str(p) for p in (svc.home / "files").rglob("*") if p.is_file())


def test_a_2gb_upload_is_refused_at_the_limit_without_buffering(api: Service):
    boundary = b"reliabilityboundary"
    preamble = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="huge.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    head = (
        b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + api.api_key.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    before = _storage_files(api)

    def body() -> Iterator[bytes]:
        yield preamble
        yield from _zeros(TWO_GB)

    with RssSampler(api.named["api"].pid) as rss:
        response, sent = _stream(api.port, head, body())
    print(f"upload: {sent >> 20} MB sent before the 413, API RSS +{rss.growth_mb:.1f} MB")
    assert response.startswith(b"HTTP/1.1 413"), response[:300]
    assert b'"code":"file_too_large"' in response.replace(b" ", b"")
    # stopped within a few socket buffers of the limit, not after 2 GB
    assert UPLOAD_LIMIT <= sent < UPLOAD_LIMIT + (16 << 20), sent
    assert rss.growth_mb < 40, f"API RSS grew {rss.growth_mb:.0f} MB while {sent >> 20} MB streamed through"
    assert _storage_files(api) == before  # the partial object was removed

    # a declared 2 GB length is refused before a byte of the body is read
    declared = (
        b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + api.api_key.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: " + str(TWO_GB).encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(declared + preamble)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert api.healthy()


def test_an_endless_json_body_is_refused_at_the_request_limit(api: Service):
    head = (
        b"POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + api.api_key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    def body() -> Iterator[bytes]:
        yield b'{"model": "tiny-test", "training_file": "file-x", "suffix": "'
        yield from _zeros(TWO_GB)

    with RssSampler(api.named["api"].pid) as rss:
        response, sent = _stream(api.port, head, body())
    print(f"json body: {sent >> 20} MB sent before the 413, API RSS +{rss.growth_mb:.1f} MB")
    assert response.startswith(b"HTTP/1.1 413"), response[:300]
    assert REQUEST_LIMIT - CHUNK <= sent < REQUEST_LIMIT + (16 << 20), sent
    assert rss.growth_mb < 40, rss.growth_mb
    assert api.healthy()


def test_an_upload_cut_by_an_api_crash_is_cleaned_up_on_restart(api: Service):
    """SIGKILL the API in the middle of an upload: the partial object stays invisible (never renamed into
    place) and the next start removes its temporary file."""
    import os

    boundary = b"crashboundary"
    head = (
        b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + api.api_key.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    part = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n'
    before = _storage_files(api)
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        for block in _zeros(8 << 20):
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        time.sleep(0.5)
        api.kill("api")
    orphans = [p for p in (api.home / "files").rglob(".upload-*")]
    assert orphans and _storage_files(api) == sorted([*before, *map(str, orphans)])
    for orphan in orphans:  # as if the crash was more than an hour ago
        os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    api.start_api()
    assert _storage_files(api) == before
