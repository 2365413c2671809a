"""The process that runs a user's python grader, inside the bubblewrap jail (standard library only).

Started as ``python -I -B runner.py '<limits json>'``. It sets its resource limits before any user code
runs, moves the protocol off stdin/stdout (user prints and C-level writes go to a bounded buffer and
/dev/null), then answers length-prefixed JSON frames: one ``init`` with the source, then one ``grade`` per
sample. This file must not import anything of ours: the package is not visible inside the sandbox.
"""

from __future__ import annotations

import io
import json
import linecache
import math
import numbers
import os
import resource
import struct
import sys
import traceback
from typing import Any

_HEADER = struct.Struct(">I")
_MAX_REQUEST = 64 << 20
_MAX_ERROR_CHARS = 8000


class _Tail(io.TextIOBase):
    """A text stream that keeps only the last ``limit`` characters written (user prints)."""

    def __init__(self, limit: int = 4000) -> None:
        self.limit = limit
        self.buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.buf = (self.buf + str(s))[-self.limit :]
        return len(s)


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send(fd: int, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, allow_nan=False).encode()
    payload = _HEADER.pack(len(data)) + data
    while payload:
        payload = payload[os.write(fd, payload) :]


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_limits(limits: dict[str, int]) -> None:
    mb = 1 << 20
    for name, value in (
        ("RLIMIT_AS", limits["memory_mb"] * mb),
        ("RLIMIT_NPROC", limits["max_procs"]),
        ("RLIMIT_FSIZE", limits["file_mb"] * mb),
        ("RLIMIT_NOFILE", limits["max_files"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    # Hard CPU limit: the process's whole life (the parent recycles it well before); the soft limit is
    # moved before each call so one sample gets at most cpu_s more seconds (SIGXCPU ends the process).
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["lifetime_cpu_s"]))


def _arm_cpu(cpu_s: int, hard: int) -> None:
    soft = min(hard, int(_cpu_used()) + 1 + cpu_s)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _error_text(exc: BaseException) -> str:
    # Only the user's frames (and libraries they called): this file's frames are noise to them.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    lines = [
        "Traceback (most recent call last):\n",
        *traceback.format_list(frames),
        *traceback.format_exception_only(type(exc), exc),
    ]
    text = "".join(lines)
    return text if len(text) <= _MAX_ERROR_CHARS else "..." + text[-_MAX_ERROR_CHARS:]


def _as_score(value: Any) -> float:
    if not isinstance(value, numbers.Real):
        raise TypeError(f"grade() must return a number, got {type(value).__name__}")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"grade() returned {score}")
    return score


def main() -> None:
    limits = json.loads(sys.argv[1])
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    _set_limits(limits)
    tail = _Tail()
    sys.stdin = io.StringIO("")
    sys.stdout = sys.stderr = tail
    grade: Any = None
    while True:
        try:
            (size,) = _HEADER.unpack(_read_exact(proto_in, _HEADER.size))
            if size > _MAX_REQUEST:
                return
            request = json.loads(_read_exact(proto_in, size))
        except EOFError:
            return
        op = request.get("op")
        reply: dict[str, Any] = {"id": request.get("id")}
        _arm_cpu(limits["cpu_s"], limits["lifetime_cpu_s"])
        try:
            if op == "init":
                source = request["source"]
                linecache.cache["grader.py"] = (len(source), None, source.splitlines(True), "grader.py")
                namespace: dict[str, Any] = {"__name__": "grader", "__file__": "grader.py"}
                exec(compile(source, "grader.py", "exec"), namespace)
                grade = namespace.get("grade")
                if not callable(grade):
                    raise TypeError("the source does not define a function grade(sample, item)")
                reply["ok"] = True
            elif op == "grade":
                reply["score"] = _as_score(grade(request["sample"], request["item"]))
                reply["ok"] = True
            else:
                reply.update(ok=False, error=f"unknown op {op!r}")
        except BaseException as exc:  # the user's SystemExit/KeyboardInterrupt are errors too
            reply.update(ok=False, error=_error_text(exc))
        reply["cpu"] = _cpu_used()
        _send(proto_out, reply)


if __name__ == "__main__":
    main()
