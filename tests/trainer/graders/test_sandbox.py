"""The python grader sandbox under attack.

Every attack runs as the first sample of a batch whose second sample is an honest one: each test asserts
that the attack failed AND that the same engine (its warm process, restarted if it had to be) still grades
the next sample correctly.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainer.graders import BatchResult, GraderEngine, GraderSettings, run_grader
from trainer.graders.sandbox import RUNNER_IN_JAIL, bwrap_argv

SENTINEL = 666.0  # what an attack returns if it got through

ATTACKER = textwrap.dedent(
    r"""
    import ctypes, os, socket, subprocess, sys, threading, time
    from pathlib import Path

    HIT = 666.0

    def cpu_loop(item):
        while True:
            pass

    def sleep(item):
        time.sleep(600)

    def memory(item):
        blob = bytearray(8 << 30)
        return HIT

    def memory_gradual(item):
        chunks = []
        try:
            while True:
                chunks.append(bytearray(16 << 20))
        except MemoryError:
            return float(len(chunks) * 16)  # MB it got before the limit

    def fork_bomb(item):
        while True:
            os.fork()

    def subprocess_spawn(item):
        subprocess.run(["/bin/sh", "-c", "echo pwned"], check=True)
        return HIT

    def thread_bomb(item):
        threads = []
        try:
            for _ in range(100_000):
                t = threading.Thread(target=time.sleep, args=(0.5,))
                t.start()
                threads.append(t)
        finally:
            for t in threads:
                t.join()
        return HIT

    def read_file(item):
        return HIT if Path(item["path"]).read_bytes() is not None else 0.0

    def read_public(item):
        return 1.0 if Path(item["path"]).read_text() == "public data" else 0.0

    def env(item):
        secret = item["secret"]
        found = any(secret in v for v in os.environ.values())
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    found = found or secret.encode() in Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    pass
        return HIT if found else 0.0

    def tcp(item):
        s = socket.create_connection(("127.0.0.1", item["port"]), timeout=1)
        return HIT

    def unix_abstract(item):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("\0" + item["name"])
        return HIT

    def unix_path(item):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(item["path"])
        return HIT

    def write_outside(item):
        Path("/tmp/" + item["probe"]).write_text("inside")  # the private /tmp works
        written = 0
        for target in item["targets"]:
            try:
                Path(target).write_text("pwned")
                written += 1
            except OSError:
                pass
        return HIT if written else 0.0

    def fill_tmp(item):
        with open("/tmp/big", "wb") as f:
            for _ in range(64):
                f.write(b"x" * (1 << 20))
        return HIT

    def huge_print(item):
        print("x" * 50_000_000)
        os.write(1, b"\x00\x00\x00\x05junk" * 100_000)
        os.write(2, b"y" * 5_000_000)
        return 1.0

    def forge_protocol(item):
        for fd in range(3, 64):
            try:
                os.write(fd, b"\xff\xff\xff\xf0" + b"z" * 1000)
            except OSError:
                pass
        return 1.0

    def new_namespace(item):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER: a way to regain capabilities
            return HIT
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    def exit_now(item):
        os._exit(0)

    def segfault(item):
        ctypes.string_at(0)

    def recursion(item):
        def f():
            return f()
        return f()

    def huge_return(item):
        return "x" * 50_000_000

    def nan(item):
        return float("nan")

    ATTACKS = {name: fn for name, fn in globals().items() if callable(fn) and not name.startswith("_")}

    def grade(sample, item):
        if "attack" in item:
            return ATTACKS[item["attack"]](item)
        return 1.0 if sample["output_text"] == item["answer"] else 0.0
    """
)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    shared = tmp_path_factory.mktemp("shared-data")
    (shared / "public.txt").write_text("public data")
    (shared / "secret").mkdir()
    (shared / "secret" / "key.txt").write_text("tenant secret")
    (shared / "token.txt").write_text("api token")
    home = tmp_path_factory.mktemp("openrft-home")
    (home / "openrft.db").write_text("the database")
    return {"shared": shared, "home": home}


@pytest.fixture(scope="module")
def sandbox_settings(data_dirs: dict[str, Path]) -> GraderSettings:
    shared, home = data_dirs["shared"], data_dirs["home"]
    return GraderSettings(
        python_timeout_s=4,
        sandbox_cpu_s=2,  # page faults of the memory bomb cost CPU time too, more so on a busy machine
        sandbox_memory_mb=256,  # first-touch page faults are slow on small VMs: keep the bomb small
        sandbox_tmp_mb=16,
        sandbox_ro_paths=[str(shared)],
        hidden_paths=[str(home), str(shared / "secret"), str(shared / "token.txt")],
    )


@pytest.fixture(scope="module")
def engine(sandbox_settings: GraderSettings) -> Iterator[GraderEngine]:
    spec = {"type": "python", "name": "attacker", "source": ATTACKER}
    with GraderEngine(spec, sandbox_settings) as eng:
        yield eng


def attack(engine: GraderEngine, kind: str, **item: Any) -> tuple[BatchResult, float]:
    """Run one attack then one honest sample; return the batch and the attack's score."""
    result = engine.grade_batch(["attack", "honest"], [{"attack": kind, **item}, {"answer": "honest"}])
    assert result.scores[1] == 1.0, (
        f"the engine failed the honest sample after {kind}: {result.error_details}"
    )
    assert result.sample_errors[1] == []
    assert result.scores[0] != SENTINEL, f"attack {kind} got through"
    return result, result.scores[0]


def assert_blocked(result: BatchResult, *fragments: str) -> None:
    assert result.scores[0] == 0.0
    assert result.sample_errors[0] == ["python_grader_runtime_error"]
    detail = result.error_details[0]
    assert any(f in detail for f in fragments), detail


def test_infinite_loop_hits_the_cpu_limit(engine: GraderEngine) -> None:
    result, _ = attack(engine, "cpu_loop")
    assert_blocked(result, "CPU time limit", "timed out")


def test_sleeping_forever_hits_the_wall_clock_limit(engine: GraderEngine) -> None:
    result, _ = attack(engine, "sleep")
    assert_blocked(result, "timed out after 4 s")


def test_memory_bombs(engine: GraderEngine) -> None:
    result, _ = attack(engine, "memory")
    assert_blocked(result, "MemoryError")
    result, megabytes = attack(engine, "memory_gradual")
    assert result.sample_errors[0] == [] and 0 < megabytes < 256


@pytest.mark.parametrize("name", ["fork_bomb", "subprocess_spawn", "new_namespace"])
def test_no_new_processes(engine: GraderEngine, name: str) -> None:
    result, _ = attack(engine, name)
    assert_blocked(result, "Operation not permitted")


def test_thread_bomb_is_contained(engine: GraderEngine) -> None:
    result, _ = attack(engine, "thread_bomb")
    assert_blocked(result, "can't start new thread", "MemoryError")


def test_etc_passwd_and_shadow_are_not_visible(engine: GraderEngine) -> None:
    for path in ("/etc/passwd", "/etc/shadow", "/root/.bashrc"):
        result, _ = attack(engine, "read_file", path=path)
        assert_blocked(result, "No such file or directory")


def test_service_files_are_hidden(engine: GraderEngine, data_dirs: dict[str, Path]) -> None:
    shared, home = data_dirs["shared"], data_dirs["home"]
    # The read-only data dir is visible (so the hiding below is what blocks the rest) ...
    result, score = attack(engine, "read_public", path=str(shared / "public.txt"))
    assert score == 1.0
    # ... but hidden paths under it, the service home, and the service's own code are not.
    hidden = [
        shared / "secret" / "key.txt",
        shared / "token.txt",
        home / "openrft.db",
        Path(__file__),
        Path(__file__).parents[3] / "core" / "settings.py",
    ]
    for path in hidden:
        assert path.exists()
        result, _ = attack(engine, "read_file", path=str(path))
        assert_blocked(result, "No such file or directory", "Permission denied")


def test_service_environment_is_not_visible(engine: GraderEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENRFT_TEST_SECRET", secret)
    # A sandbox started after the secret is in the parent's environment.
    fresh = GraderEngine({"type": "python", "source": ATTACKER}, engine.settings)
    with fresh:
        result, score = attack(fresh, "env", secret=secret)
    assert score == 0.0 and result.sample_errors[0] == []


def test_no_network(engine: GraderEngine, tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"openrft-test-{uuid.uuid4().hex}"
    abstract.bind("\0" + name)
    abstract.listen()
    path_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = str(tmp_path / "s.sock")
    path_sock.bind(sock_path)
    path_sock.listen()
    try:
        result, _ = attack(engine, "tcp", port=listener.getsockname()[1])
        assert_blocked(result, "Address family not supported")
        result, _ = attack(engine, "unix_abstract", name=name)
        assert_blocked(result, "Connection refused")  # another network namespace
        result, _ = attack(engine, "unix_path", path=sock_path)
        assert_blocked(result, "No such file or directory")
    finally:
        for s in (listener, abstract, path_sock):
            s.close()


def test_no_writes_outside_the_private_tmp(engine: GraderEngine, tmp_path: Path) -> None:
    probe = f"openrft-probe-{uuid.uuid4().hex}"
    targets = [
        "/usr/pwned",
        "/pwned",
        "/etc/pwned",
        RUNNER_IN_JAIL,
        os.path.join(sys.prefix, "pwned"),
        str(tmp_path / "pwned"),
        str(Path(__file__).parent / "pwned"),
    ]
    result, score = attack(engine, "write_outside", probe=probe, targets=targets)
    assert score == 0.0 and result.sample_errors[0] == []
    assert not (Path("/tmp") / probe).exists()  # the sandbox's /tmp is its own
    for target in targets[4:]:
        assert not Path(target).exists()


def test_tmp_is_size_limited(engine: GraderEngine) -> None:
    result, _ = attack(engine, "fill_tmp")
    assert_blocked(result, "No space left on device", "File too large", "file size limit")


def test_huge_output_does_not_reach_the_service(engine: GraderEngine) -> None:
    result, score = attack(engine, "huge_print")
    assert score == 1.0 and result.sample_errors[0] == []


def test_forged_protocol_frames_are_rejected(engine: GraderEngine) -> None:
    result, _ = attack(engine, "forge_protocol")
    assert_blocked(result, "exceeds")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("exit_now", "died"),
        ("segfault", "segmentation fault"),
        ("recursion", "RecursionError"),
        ("huge_return", "must return a number, got str"),
        ("nan", "returned nan"),
    ],
)
def test_crashes_and_bad_results(engine: GraderEngine, name: str, fragment: str) -> None:
    result, _ = attack(engine, name)
    assert_blocked(result, fragment)
    assert len(result.error_details[0]) < 2100


def test_warm_process_is_reused(sandbox_settings: GraderSettings) -> None:
    with GraderEngine({"type": "python", "source": ATTACKER}, sandbox_settings) as eng:
        result = eng.grade_batch(["a"] * 200, [{"answer": "a"}] * 200)
        assert result.scores == [1.0] * 200
        assert eng.root.pool(eng._runtime).starts == 1  # type: ignore[attr-defined]


def test_openai_python_example_matches_fuzzy_match(sandbox_settings: GraderSettings) -> None:
    # The graders guide's python example: rapidfuzz inside the sandbox equals the fuzzy_match grader.
    source = textwrap.dedent(
        """
        from rapidfuzz import fuzz, utils
        import numpy as np

        def grade(sample, item) -> float:
            output_text = sample["output_text"]
            reference_answer = item["reference_answer"]
            return float(np.float64(fuzz.WRatio(output_text, reference_answer, processor=utils.default_process) / 100.0))
        """
    )
    fuzzy = {
        "type": "text_similarity",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.reference_answer }}",
        "evaluation_metric": "fuzzy_match",
    }
    item = {"reference_answer": "fuzzy wuzzy had no hair"}
    py = run_grader({"type": "python", "source": source}, "fuzzy wuzzy was a bear", item, sandbox_settings)
    ts = run_grader(fuzzy, "fuzzy wuzzy was a bear", item, sandbox_settings)
    assert py["reward"] == pytest.approx(ts["reward"]) and 0 < py["reward"] < 1
    assert not any(v for v in py["metadata"]["errors"].values())


def test_module_errors_fail_every_sample_without_restarts(sandbox_settings: GraderSettings) -> None:
    source = "raise ValueError('bad module')\ndef grade(sample, item):\n    return 1.0\n"
    with GraderEngine({"type": "python", "source": source}, sandbox_settings) as eng:
        result = eng.grade_batch(["a", "b", "c"], [{}] * 3)
        assert result.scores == [0.0] * 3 and result.errors["python_grader_runtime_error"] == 3
        assert (
            "loading the grader failed" in result.error_details[0] and "bad module" in result.error_details[0]
        )
        assert eng.root.pool(eng._runtime).starts == 1  # type: ignore[attr-defined]


def test_a_grader_that_stops_reading_cannot_hang_the_engine(sandbox_settings: GraderSettings) -> None:
    # grade() forges its own reply (it may lie about its own score) and then never returns, so it never
    # reads the next request: a request larger than the pipe buffer must not block the engine forever.
    source = textwrap.dedent(
        """
        import json, os, struct, time

        def grade(sample, item):
            if item.get("forge"):
                reply = json.dumps({"id": item["forge"], "ok": True, "score": 0.5}).encode()
                for fd in range(3, 16):
                    try:
                        os.write(fd, struct.pack(">I", len(reply)) + reply)
                    except OSError:
                        pass
                time.sleep(3600)
            return 1.0
        """
    )
    with GraderEngine({"type": "python", "source": source}, sandbox_settings) as eng:
        # ids: 1 is the init call, 2 the first sample
        result = eng.grade_batch(["a", "b", "c"], [{"forge": 2}, {"big": "x" * (1 << 20)}, {}])
    assert result.scores == [0.5, 0.0, 1.0]
    assert result.sample_errors == [[], ["python_grader_runtime_error"], []]
    assert "timed out" in result.error_details[0]


def test_module_level_infinite_loop_is_a_runtime_error(sandbox_settings: GraderSettings) -> None:
    source = "while True:\n    pass\ndef grade(sample, item):\n    return 1.0\n"
    quick = sandbox_settings.model_copy(update={"sandbox_cpu_s": 1})
    with GraderEngine({"type": "python", "source": source}, quick) as eng:
        result = eng.grade_batch(["a", "b"], [{}] * 2)
        assert result.scores == [0.0, 0.0] and result.errors["python_grader_runtime_error"] == 2
        assert "loading the grader" in result.error_details[0]
        assert eng.root.pool(eng._runtime).starts == 1  # type: ignore[attr-defined]


def test_runtime_error_details_via_run(sandbox_settings: GraderSettings) -> None:
    source = "def grade(sample, item):\n    return 1 / 0\n"
    out = run_grader({"type": "python", "source": source}, "x", {}, sandbox_settings)
    errors = out["metadata"]["errors"]
    assert out["reward"] == 0.0 and errors["python_grader_runtime_error"] is True
    assert "ZeroDivisionError" in errors["python_grader_runtime_error_details"]
    assert 'File "grader.py", line 2, in grade' in errors["python_grader_runtime_error_details"]


def test_without_bwrap_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran-unjailed"
    source = (
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\ndef grade(s, i):\n    return 1.0\n"
    )
    settings = GraderSettings(bwrap_path=str(tmp_path / "no-bwrap"))
    out = run_grader({"type": "python", "source": source}, "x", {}, settings)
    errors = out["metadata"]["errors"]
    assert out["reward"] == 0.0 and errors["python_grader_server_error"] is True
    assert errors["python_grader_server_error_type"] == "sandbox_unavailable"
    assert not marker.exists()


def test_no_sandbox_processes_survive_the_engine(sandbox_settings: GraderSettings) -> None:
    def jailed() -> list[int]:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if RUNNER_IN_JAIL.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(int(pid))
            except OSError:
                pass
        return pids

    before = set(jailed())
    eng = GraderEngine(
        {"type": "python", "source": ATTACKER}, sandbox_settings.model_copy(update={"sandbox_workers": 2})
    )
    threads = [
        threading.Thread(target=eng.grade_batch, args=(["a"] * 4, [{"answer": "a"}] * 4)) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(jailed()) - before  # running while the engine lives
    eng.close()
    assert not set(jailed()) - before


def test_jail_command_hides_paths_under_bound_directories(data_dirs: dict[str, Path]) -> None:
    shared = data_dirs["shared"]
    settings = GraderSettings(
        sandbox_ro_paths=[str(shared)], hidden_paths=[str(shared / "secret"), "/nonexistent"]
    )
    argv = bwrap_argv(settings, "bwrap", 3)
    mounts = list(itertools.pairwise(argv))
    secret = str((shared / "secret").resolve())
    assert mounts.index(("--tmpfs", secret)) > mounts.index(("--ro-bind", str(shared.resolve())))
    assert mounts.index(("--ro-bind", str(shared.resolve()))) > mounts.index(("--tmpfs", "/tmp"))
    assert "/nonexistent" not in argv
    assert "--clearenv" in argv and "--unshare-all" in argv and "--die-with-parent" in argv
    assert argv[argv.index("--seccomp") + 1] == "3"
    assert "/etc" not in argv  # only /etc/ld.so.cache is bound
