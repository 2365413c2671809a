"""`openrft worker` keeps its Celery child alive: restarts after a crash, stops for good on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from app.supervise import supervise
from tests.support import REPO

CRASH_TWICE = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text() or 0) + 1; p.write_text(str(n)); "
    "sys.exit(0 if n >= 3 else 3)"
)


def test_a_crashed_worker_is_started_again_with_growing_delays(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.write_text("")
    delays: list[float] = []
    rc = supervise([sys.executable, "-c", CRASH_TWICE, str(runs)], sleep=delays.append)
    assert (rc, runs.read_text(), delays) == (0, "3", [1.0, 2.0])


def test_restarts_can_be_bounded(tmp_path: Path) -> None:
    delays: list[float] = []
    rc = supervise([sys.executable, "-c", "raise SystemExit(5)"], sleep=delays.append, max_restarts=2)
    assert (rc, len(delays)) == (5, 2)


def test_sigterm_reaches_the_worker_and_ends_supervision(tmp_path: Path) -> None:
    child = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
        "print('ready', flush=True); time.sleep(60)"
    )
    script = f"import sys; from app.supervise import supervise; sys.exit(supervise([sys.executable, '-c', {child!r}]))"
    # Its own session: the signal goes to the supervisor alone, as docker sends it to PID 1.
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 7  # the worker's own exit status, and no restart
    assert time.monotonic() - started < 10
