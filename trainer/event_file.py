"""A job's events through a file: rank 0 of a launch writes them (:class:`EventFileSink`), the process that
launched it calls its real sink with them (:func:`relay_events`, :class:`EventRelay`).

The file is JSON lines, one per sink call, in call order::

    {"event": "message", "text": "...", "level": "info"}
    {"event": "metrics", "text": "...", "data": {...}}
    {"event": "checkpoint_saved", "step": 3, "path": "...", "metrics": {...}}
    {"event": "checkpoint_removed", "step": 1}
    {"event": "estimate", "finish_at": 1700000000.0, "step": 2, "total_steps": 9}

``checkpoint_saved`` keeps its in-process contract (trainer/interface.py): the consumer uploads the checkpoint
and the state directory inside it, so the writer must not save the next state before the consumer's sink has
returned. The writer therefore waits after that line until the consumer acknowledges it in ``<file>.ack``
(``{"line": N, "error": null}``: every line up to N is handled). A consumer whose sink failed writes the
error there instead, and the writer raises it; a consumer that is gone (its pid, from
:data:`CONSUMER_ENV`) or silent past the timeout makes the writer raise too, so rank 0 fails and the launch
ends rather than training on with nobody recording it.

Torch-free: the worker's side imports this.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

from trainer.interface import EventSink

log = logging.getLogger("openrft.trainer.events")

CONSUMER_ENV = "OPENRFT_EVENTS_CONSUMER"
"""Set by the launcher for the ranks: the pid of the process that relays the event file."""

ACK_TIMEOUT_S = 4 * 3600.0
"""How long the writer waits for a checkpoint's acknowledgement: the consumer uploads the checkpoint and the
state then, which for a large model on a slow volume takes long. A dead consumer is noticed at once."""

POLL_S = 0.05


class EventConsumerError(RuntimeError):
    """The process that records the events failed, is gone, or did not acknowledge a checkpoint in time."""


def ack_path(path: Path) -> Path:
    """Where the consumer of the event file ``path`` acknowledges lines."""
    return path.with_name(path.name + ".ack")


def _jsonable(value: Any) -> Any:
    """Metrics hold numpy or torch scalars now and then; the database stores them as plain numbers."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _read_ack(path: Path) -> tuple[int, str | None]:
    try:
        data = json.loads(path.read_text())
        return int(data.get("line", 0)), data.get("error")
    except (OSError, ValueError, AttributeError):
        return 0, None  # not written yet (it is replaced atomically, never seen half-written)


def _write_ack(path: Path, line: int, error: str | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"line": line, "error": error}))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EventFileSink:
    """An EventSink that appends each call to ``path`` as a JSON line (flushed), and waits after a
    ``checkpoint_saved`` until the consumer acknowledges it (see the module docstring).

    ``consumer_pid``: the consumer's process, checked at every event and while waiting (default: from
    :data:`CONSUMER_ENV`; None: not checked)."""

    def __init__(
        self,
        path: Path,
        *,
        consumer_pid: int | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.path = Path(path)
        self.ack = ack_path(self.path)
        env_pid = os.environ.get(CONSUMER_ENV)
        self.consumer_pid = consumer_pid if consumer_pid is not None else (int(env_pid) if env_pid else None)
        self.ack_timeout_s = ack_timeout_s
        self.poll_s = poll_s
        self._file: Any = None
        self._lines = 0

    def _check_consumer(self) -> None:
        _, error = _read_ack(self.ack)
        if error is not None:
            raise EventConsumerError(f"the process recording this job's events failed: {error}")
        if self.consumer_pid is not None and not _alive(self.consumer_pid):
            raise EventConsumerError(
                f"the process recording this job's events (pid {self.consumer_pid}) is gone; stopping"
            )

    def _append(self, record: dict[str, Any]) -> int:
        self._check_consumer()
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():  # the consumer counts lines from the start of the file
                with self.path.open("rb") as f:
                    self._lines = sum(1 for _ in f)
            self._file = self.path.open("a", encoding="utf-8")
        # One write per line: a reader may see a line's start before its end, never two lines interleaved.
        self._file.write(json.dumps(record, default=_jsonable) + "\n")
        self._file.flush()
        self._lines += 1
        return self._lines

    def _wait_for_ack(self, line: int, what: str) -> None:
        deadline = time.monotonic() + self.ack_timeout_s
        while True:
            acked, error = _read_ack(self.ack)
            if error is not None:
                raise EventConsumerError(f"the process recording this job's events failed at {what}: {error}")
            if acked >= line:
                return
            if self.consumer_pid is not None and not _alive(self.consumer_pid):
                raise EventConsumerError(
                    f"the process recording this job's events (pid {self.consumer_pid}) is gone before it "
                    f"recorded {what}"
                )
            if time.monotonic() >= deadline:
                raise EventConsumerError(
                    f"{what} was not recorded within {self.ack_timeout_s:g} s (no acknowledgement in "
                    f"{self.ack}); is the process reading {self.path} still running?"
                )
            time.sleep(self.poll_s)

    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        self._append({"event": "message", "text": text, "level": level})

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self._append({"event": "metrics", "text": text, "data": data})

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        line = self._append(
            {"event": "checkpoint_saved", "step": step, "path": str(path), "metrics": metrics}
        )
        self._wait_for_ack(line, f"the checkpoint of step {step}")

    def checkpoint_removed(self, step: int) -> None:
        self._append({"event": "checkpoint_removed", "step": step})

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        self._append({"event": "estimate", "finish_at": finish_at, "step": step, "total_steps": total_steps})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _deliver(sink: EventSink, record: dict[str, Any]) -> bool:
    """Call ``sink`` for one line; True for a checkpoint (which the writer waits on)."""
    kind = record.get("event")
    if kind == "message":
        sink.message(record["text"], level=record.get("level", "info"))
    elif kind == "metrics":
        sink.metrics(record["text"], record["data"])
    elif kind == "checkpoint_saved":
        sink.checkpoint_saved(int(record["step"]), Path(record["path"]), record["metrics"])
        return True
    elif kind == "checkpoint_removed":
        sink.checkpoint_removed(int(record["step"]))
    elif kind == "estimate":
        sink.estimate(
            float(record["finish_at"]), step=int(record["step"]), total_steps=int(record["total_steps"])
        )
    else:
        log.warning("event file: unknown event %r skipped", kind)
    return False


def relay_events(path: Path, sink: EventSink, *, stop: threading.Event, poll_s: float = POLL_S) -> None:
    """Call ``sink`` for each line of ``path`` as it is written (the file may not exist yet), acknowledging each
    checkpoint once ``sink.checkpoint_saved`` returned; after ``stop`` is set, what is left is delivered and
    this returns. A failing sink call is acknowledged with its error (so the writer stops instead of
    waiting) and re-raised."""
    ack = ack_path(path)
    offset, pending, line = 0, b"", 0
    while True:
        last_pass = stop.is_set()  # read before the file, so what was written before the stop is delivered
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line += 1
            try:
                record = json.loads(raw)
            except ValueError:
                log.warning("event file %s: line %d is not JSON; skipped", path, line)
                continue
            try:
                if _deliver(sink, record):
                    _write_ack(ack, line)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    _write_ack(ack, line - 1, f"{type(exc).__name__}: {exc}")
                raise
        if last_pass:
            return
        stop.wait(poll_s)


class EventRelay:
    """:func:`relay_events` on a thread of its own, for the duration of a launch::

    with EventRelay(events_file, sink) as relay:
        run_distributed(...)
    relay.raise_error()  # what the sink raised, if it did
    """

    def __init__(self, path: Path, sink: EventSink, *, poll_s: float = POLL_S) -> None:
        self.path = Path(path)
        self.sink = sink
        self.poll_s = poll_s
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"events-{self.path.name}", daemon=True)

    def _run(self) -> None:
        try:
            relay_events(self.path, self.sink, stop=self._stop, poll_s=self.poll_s)
        except BaseException as exc:  # kept for the launching thread, which raises it
            self.error = exc

    def start(self) -> EventRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Deliver what is left in the file, then end."""
        self._stop.set()
        self._thread.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def __enter__(self) -> EventRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
