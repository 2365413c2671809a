"""Run user python graders in a warm bubblewrap jail, never in the service's own processes.

The jail (``bwrap``): new user/pid/net/ipc/uts/cgroup namespaces, no capabilities, uid 65534 inside, an
empty environment, read-only binds of only what Python needs (/usr, the interpreter's prefix, the venv),
a private size-limited tmpfs /tmp as the only writable place, a minimal /dev and a fresh /proc, the root
remounted read-only, a seccomp filter (see seccomp.py), and ``hidden_paths`` masked even when they lie under
a bound directory. Inside, the runner sets rlimits (address space, CPU, processes, file size, open files)
before user code runs. The parent enforces a wall-clock deadline per call, bounds every reply's size, and
kills and restarts the process on timeout, crash or protocol violation. Without bwrap nothing runs.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from trainer.graders import seccomp
from trainer.graders.errors import GradingError
from trainer.graders.settings import GraderSettings

RUNNER = Path(__file__).with_name("sandbox_runner.py")
RUNNER_IN_JAIL = "/sandbox/runner.py"
SANDBOX_UID = 65534  # "nobody" inside the user namespace
_HEADER = struct.Struct(">I")
_LIFETIME_CPU_FACTOR = 20


class SandboxUnavailable(GradingError):
    """The jail cannot be used (no bwrap, or namespaces refused): a python_grader_server_error."""

    def __init__(self, detail: str) -> None:
        super().__init__("python_grader_server_error", detail)


def find_bwrap(settings: GraderSettings) -> str:
    path = settings.bwrap_path or shutil.which("bwrap")
    if not path or not os.access(path, os.X_OK):
        raise SandboxUnavailable(
            "python graders need bubblewrap (`bwrap`), which is not installed: install the `bubblewrap` "
            "package (scripts/setup.sh does). User code is never run outside the sandbox."
        )
    return path


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _interpreter_roots() -> list[Path]:
    """Directories the interpreter and its packages live in (besides /usr)."""
    import site

    roots = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    roots.add(Path(sys.executable).resolve().parent.parent)
    for sp in site.getsitepackages():
        if Path(sp).is_dir():
            roots.add(Path(sp).resolve())
    # Keep only outermost directories, and none that /usr already covers.
    usr = Path("/usr")
    kept: list[Path] = []
    for root in sorted(roots, key=lambda p: len(p.parts)):
        if not _under(root, usr) and not any(_under(root, k) for k in kept) and root != Path("/"):
            kept.append(root)
    return kept


def bwrap_argv(settings: GraderSettings, bwrap: str, seccomp_fd: int | None) -> list[str]:
    """The full command line that starts the runner in the jail."""
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "grader",
        "--clearenv",
    ]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        # One thread per BLAS/OpenMP pool: threads count against RLIMIT_NPROC and RLIMIT_AS.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    for key, value in env.items():
        argv += ["--setenv", key, value]
    # The private /tmp first: read-only binds that live under the host's /tmp are mounted on top of it.
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(settings.sandbox_tmp_mb << 20), "--tmpfs", "/tmp"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    bound = [Path("/usr"), *_interpreter_roots()]
    for root in bound[1:]:
        argv += ["--ro-bind", str(root), str(root)]
    for extra in settings.sandbox_ro_paths:
        path = Path(extra).resolve()
        if path.exists():
            argv += ["--ro-bind", str(path), str(path)]
            bound.append(path)
    if Path("/etc/ld.so.cache").is_file():  # the dynamic loader's cache; /etc itself stays hidden
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    argv += ["--ro-bind", str(RUNNER), RUNNER_IN_JAIL]
    # Hidden paths under a bound directory are covered by an empty tmpfs (dirs) or /dev/null (files).
    for hidden in settings.hidden_paths:
        path = Path(hidden).expanduser().resolve()
        if path.exists() and any(_under(path, b) for b in bound):
            argv += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    argv += ["--remount-ro", "/", "--chdir", "/tmp"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    limits = {
        "memory_mb": settings.sandbox_memory_mb,
        "max_procs": settings.sandbox_max_procs,
        "file_mb": settings.sandbox_tmp_mb,
        "max_files": 256,
        "cpu_s": settings.sandbox_cpu_s,
        "lifetime_cpu_s": settings.sandbox_cpu_s * _LIFETIME_CPU_FACTOR,
    }
    argv += ["--", sys.executable, "-I", "-B", RUNNER_IN_JAIL, json.dumps(limits)]
    return argv


def _drain_until_eof(fd: int, deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and not os.read(fd, 1 << 16):
            return


class _ProtocolError(Exception):
    pass


class PythonSandbox:
    """One warm jailed process for one grader's source. Not thread-safe: use one per thread (see pool)."""

    def __init__(self, source: str, settings: GraderSettings) -> None:
        self.source = source
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = bytearray()
        self._next_id = 0
        self._init_error: str | None = None
        self.starts = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def _spawn(self) -> None:
        bwrap = find_bwrap(self.settings)
        read_fd = None
        if seccomp.supported():
            program = seccomp.build_filter()
            read_fd, write_fd = os.pipe()
            os.write(write_fd, program)  # a few hundred bytes: fits the pipe buffer
            os.close(write_fd)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        try:
            self.proc = subprocess.Popen(
                bwrap_argv(self.settings, bwrap, read_fd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                pass_fds=(read_fd,) if read_fd is not None else (),
                env={},  # bwrap gets nothing of ours either
                start_new_session=True,
            )
        finally:
            if read_fd is not None:
                os.close(read_fd)
        assert self.proc.stdin is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        self._buffer.clear()
        self.starts += 1

    def _start(self) -> None:
        self._spawn()
        try:
            reply = self._call({"op": "init", "source": self.source}, self.settings.sandbox_startup_timeout_s)
        except TimeoutError:
            # The module itself runs too long (CPU limit or deadline): the user's code, like any load error.
            self._init_error = (
                f"loading the grader timed out after {self.settings.sandbox_startup_timeout_s:g} s"
            )
            self.close()
            return
        except _ProtocolError as exc:
            detail = self._death_note(str(exc))
            self.close()
            if "CPU time limit" in detail:
                self._init_error = f"loading the grader failed: {detail}"
                return
            raise SandboxUnavailable(f"the python sandbox failed to start: {detail}") from None
        if not reply.get("ok"):
            # The user's module failed (syntax, import, top-level exception): every sample will fail alike.
            self._init_error = f"loading the grader failed:\n{reply.get('error', '')}"
            self.close()

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            # The jailed processes die with bwrap, asynchronously; the runner holds the write end of our
            # stdout pipe (and cannot have passed it on: no forks), so EOF there means it is gone.
            if proc.stdout is not None:
                _drain_until_eof(proc.stdout.fileno(), deadline=time.monotonic() + 5)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> PythonSandbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- protocol --------------------------------------------------------------------------------
    def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self._next_id += 1
        request["id"] = self._next_id
        data = json.dumps(request, default=str).encode()
        deadline = time.monotonic() + timeout
        self._write(_HEADER.pack(len(data)) + data, deadline)
        (size,) = _HEADER.unpack(self._read(_HEADER.size, deadline))
        if size > self.settings.sandbox_max_output_bytes:
            raise _ProtocolError(
                f"reply of {size} bytes exceeds the {self.settings.sandbox_max_output_bytes} limit"
            )
        try:
            reply = json.loads(self._read(size, deadline))
        except ValueError:
            raise _ProtocolError("malformed reply") from None
        if not isinstance(reply, dict) or reply.get("id") != self._next_id:
            raise _ProtocolError("out-of-sequence reply")
        return reply

    def _write(self, data: bytes, deadline: float) -> None:
        # Non-blocking with the call's deadline: a grader that stops reading its stdin (say, a thread that
        # forged a reply while grade() keeps running) must not hang us on a full pipe.
        assert self.proc is not None and self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            _, ready, _ = select.select([], [fd], [], left)
            if not ready:
                continue
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
            except OSError:
                raise _ProtocolError("the process is gone") from None

    def _read(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, max(n - len(self._buffer), 1 << 16))
            if not chunk:
                raise _ProtocolError("the process exited")
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _death_note(self, fallback: str) -> str:
        """Why the process ended: its exit status and the start of its stderr (bwrap's own errors)."""
        proc = self.proc
        status = ""
        if proc is not None:
            try:
                rc = proc.wait(timeout=0.5)  # after EOF bwrap exits right away; alive means a bad frame
            except subprocess.TimeoutExpired:
                return fallback
            if rc is not None:
                # bwrap reports a signalled child as 128 + signal.
                sig = rc - 128 if rc > 128 else (-rc if rc < 0 else 0)
                status = {
                    signal.SIGXCPU: "CPU time limit exceeded",
                    signal.SIGKILL: "killed",
                    signal.SIGSEGV: "segmentation fault",
                    signal.SIGXFSZ: "file size limit exceeded",
                    signal.SIGSYS: "forbidden system call",
                }.get(sig, f"exit status {rc}")  # type: ignore[call-overload]
        err = b""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read(2000)
        text = "; ".join(s for s in (status, err.decode(errors="replace").strip()) if s)
        return text or fallback

    def grade(self, sample: dict[str, Any], item: Any) -> float:
        """Score one sample; raises GradingError (runtime error: user code; server error: the jail)."""
        if self._init_error is not None:
            raise GradingError("python_grader_runtime_error", self._init_error)
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
            if self._init_error is not None:
                raise GradingError("python_grader_runtime_error", self._init_error)
        try:
            reply = self._call(
                {"op": "grade", "sample": sample, "item": item}, self.settings.python_timeout_s
            )
        except TimeoutError:
            self.close()
            raise GradingError(
                "python_grader_runtime_error",
                f"grade() timed out after {self.settings.python_timeout_s:g} s (the process was restarted)",
            ) from None
        except _ProtocolError as exc:
            note = self._death_note(str(exc))
            self.close()
            raise GradingError("python_grader_runtime_error", f"the grader process died: {note}") from None
        if float(reply.get("cpu", 0)) > self.settings.sandbox_cpu_s * _LIFETIME_CPU_FACTOR / 2:
            self.close()  # recycle before the lifetime CPU limit can hit a healthy call
        if not reply.get("ok"):
            raise GradingError("python_grader_runtime_error", str(reply.get("error", "unknown error")))
        score = reply.get("score")
        if not isinstance(score, int | float):
            raise GradingError("python_grader_runtime_error", "malformed score")
        return float(score)


class SandboxPool:
    """``sandbox_workers`` warm sandboxes for one source, each used by one thread at a time."""

    def __init__(self, source: str, settings: GraderSettings) -> None:
        self._free = [PythonSandbox(source, settings) for _ in range(settings.sandbox_workers)]
        self._all = list(self._free)
        self._cond = threading.Condition()
        self._closed = False

    def grade(self, sample: dict[str, Any], item: Any) -> float:
        with self._cond:
            while not self._free:
                self._cond.wait()
            if self._closed:
                raise GradingError("python_grader_server_error", "the grader engine is closed")
            box = self._free.pop()
        try:
            return box.grade(sample, item)
        finally:
            with self._cond:
                self._free.append(box)
                self._cond.notify()

    @property
    def starts(self) -> int:
        return sum(b.starts for b in self._all)

    def close(self) -> None:
        with self._cond:
            self._closed = True
        for box in self._all:
            box.close()
