"""A seccomp-BPF filter for the python grader sandbox, handed to ``bwrap --seccomp``.

Why a filter on top of namespaces and rlimits: RLIMIT_NPROC is not enforced for root (the service may run
as root in a container), so process creation is denied here instead: ``fork``/``vfork``, ``clone`` without
CLONE_THREAD (threads still work) and ``clone3`` (answered ENOSYS so glibc falls back to ``clone``). Also
denied: sockets other than AF_UNIX (no network even if a namespace were shared), new namespaces,
``ptrace``, kernel keyrings, ``bpf``, ``perf_event_open``, ``userfaultfd`` and ``io_uring`` (which would
bypass syscall filtering). Any other architecture or ABI (x32) kills the process.
"""

from __future__ import annotations

import errno
import platform
import struct

# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_JGE_K = 0x35
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000

_CLONE_THREAD = 0x00010000
_AF_UNIX = 1
_X32_SYSCALL_BIT = 0x40000000
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]  (little-endian low words)
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16

_ARCHES: dict[str, dict[str, object]] = {
    "x86_64": {
        "audit": 0xC000003E,
        "clone": 56,
        "clone3": 435,
        "socket": 41,
        "deny": {
            "fork": 57,
            "vfork": 58,
            "ptrace": 101,
            "unshare": 272,
            "setns": 308,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "perf_event_open": 298,
            "bpf": 321,
            "userfaultfd": 323,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "mount": 165,
            "pivot_root": 155,
            "chroot": 161,
        },
    },
    "aarch64": {
        "audit": 0xC00000B7,
        "clone": 220,
        "clone3": 435,
        "socket": 198,
        "deny": {
            "ptrace": 117,
            "unshare": 97,
            "setns": 268,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "perf_event_open": 241,
            "bpf": 280,
            "userfaultfd": 282,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "mount": 40,
            "pivot_root": 41,
            "chroot": 51,
        },
    },
}


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def supported() -> bool:
    return platform.machine() in _ARCHES


def build_filter(machine: str | None = None) -> bytes:
    """The filter program (an array of ``struct sock_filter``) for this machine's architecture."""
    arch = _ARCHES[machine or platform.machine()]
    deny: dict[str, int] = arch["deny"]  # type: ignore[assignment]
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        _ins(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _ins(_JEQ_K, 1, 0, int(arch["audit"])),  # type: ignore[call-overload]
        _ins(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _ins(_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if machine == "x86_64" or (machine is None and platform.machine() == "x86_64"):
        prog += [_ins(_JGE_K, 0, 1, _X32_SYSCALL_BIT), _ins(_RET_K, 0, 0, _RET_KILL_PROCESS)]
    for nr in deny.values():
        prog += [_ins(_JEQ_K, 0, 1, nr), _ins(_RET_K, 0, 0, eperm)]
    prog += [
        _ins(_JEQ_K, 0, 1, int(arch["clone3"])),  # type: ignore[call-overload]
        _ins(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        # clone: allowed only for threads
        _ins(_JEQ_K, 0, 4, int(arch["clone"])),  # type: ignore[call-overload]
        _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
        _ins(_JSET_K, 0, 1, _CLONE_THREAD),
        _ins(_RET_K, 0, 0, _RET_ALLOW),
        _ins(_RET_K, 0, 0, eperm),
        # socket: AF_UNIX only
        _ins(_JEQ_K, 0, 4, int(arch["socket"])),  # type: ignore[call-overload]
        _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
        _ins(_JEQ_K, 0, 1, _AF_UNIX),
        _ins(_RET_K, 0, 0, _RET_ALLOW),
        _ins(_RET_K, 0, 0, _RET_ERRNO | errno.EAFNOSUPPORT),
        _ins(_RET_K, 0, 0, _RET_ALLOW),
    ]
    return b"".join(prog)
