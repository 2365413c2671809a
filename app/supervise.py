"""Keep one worker process running: ``openrft worker`` runs Celery as a child and starts it again when it dies
on its own.

Why: Celery's consumer can die of a broker outage instead of reconnecting (kombu's Redis transport raises
``AttributeError`` while restoring unacknowledged messages on a connection that is already gone, and the
worker exits with "Unrecoverable error"); the periodic reaper lives in that process, so jobs whose messages
died with Redis would wait forever. Under docker compose a restart policy covers this; bare-metal and test
deployments get the same from here.

Signals: SIGTERM is passed on (Celery treats a repeated SIGTERM as one warm shutdown, and docker sends it to
PID 1 only); SIGINT is not, because a terminal delivers Ctrl+C to the whole process group already and a
second SIGINT would turn Celery's warm shutdown into a cold one. Either one ends supervision.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

MIN_DELAY = 1.0
MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long resets the back-off


def supervise(
    cmd: Sequence[str],
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_restarts: int | None = None,
) -> int:
    """Run ``cmd`` until it exits cleanly or a stop signal arrives; returns its last exit code."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def on_int(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
    delay, restarts = MIN_DELAY, 0
    try:
        while True:
            started = time.monotonic()
            child = subprocess.Popen(list(cmd))
            rc = child.wait()
            if stopping or rc == 0:
                return rc
            if max_restarts is not None and restarts >= max_restarts:
                return rc
            if time.monotonic() - started >= HEALTHY_AFTER:
                delay = MIN_DELAY
            print(
                f"openrft worker: the worker exited with status {rc}; starting it again in {delay:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            sleep(delay)
            if stopping:
                return rc
            delay = min(MAX_DELAY, delay * 2)
            restarts += 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
