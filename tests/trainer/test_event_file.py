"""trainer.event_file and the launch result: rank 0's events through a file to the launching process's sink,
a checkpoint waiting for the sink that records it, and a launch's outcome written by one process and read by
another. Threads stand for the two processes here; tests/trainer/test_launch.py runs real ranks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import RecordingSink
from trainer.event_file import EventConsumerError, EventFileSink, EventRelay, ack_path, relay_events
from trainer.interface import CheckpointInfo, JobResult, TrainerError
from trainer.launch import read_result, write_result


class SlowCheckpoints(RecordingSink):
    """Records when each checkpoint call ends; takes ``delay`` seconds per checkpoint, as an upload would."""

    def __init__(self, order: list[str], delay: float = 0.3) -> None:
        super().__init__()
        self.order = order
        self.delay = delay

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        time.sleep(self.delay)
        super().checkpoint_saved(step, path, metrics)
        self.order.append(f"recorded {step}")


def test_every_call_reaches_the_sink_in_order_and_a_checkpoint_waits_for_it(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    order: list[str] = []
    consumer = SlowCheckpoints(order)
    writer = EventFileSink(events, poll_s=0.01)
    with EventRelay(events, consumer, poll_s=0.01) as relay:
        writer.message("hello", level="warn")
        writer.metrics("Step 1/2", {"step": 1, "total_steps": 2, "loss": _Scalar(0.5)})
        writer.checkpoint_saved(1, tmp_path / "ckpt-1", {"step": 1})
        order.append("writer went on after 1")
        writer.checkpoint_removed(1)
        writer.estimate(1234.5, step=1, total_steps=2)
        writer.checkpoint_saved(2, tmp_path / "ckpt-2", {"step": 2, "reward": float("nan")})
        order.append("writer went on after 2")
        writer.message("last")  # written just before the stop: still delivered
    relay.raise_error()
    assert order == ["recorded 1", "writer went on after 1", "recorded 2", "writer went on after 2"]
    kinds = [k for k, _ in consumer.events]
    assert kinds == [
        "message", "metrics", "checkpoint_saved", "checkpoint_removed", "estimate", "checkpoint_saved", "message",
    ]  # fmt: skip
    assert consumer.of("message") == [("warn", "hello"), ("info", "last")]
    assert consumer.of("metrics") == [{"step": 1, "total_steps": 2, "loss": 0.5}]
    assert consumer.of("checkpoint_saved")[0] == (1, tmp_path / "ckpt-1", {"step": 1})
    assert consumer.of("estimate") == [(1234.5, 1, 2)]
    assert consumer.of("checkpoint_removed") == [1]
    assert json.loads(ack_path(events).read_text()) == {"line": 6, "error": None}


class _Scalar:
    """Like a numpy or torch scalar in a metrics dict."""

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


def test_a_line_is_delivered_only_once_complete(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    sink = RecordingSink()
    stop = threading.Event()
    thread = threading.Thread(target=relay_events, args=(events, sink), kwargs={"stop": stop, "poll_s": 0.01})
    thread.start()
    line = json.dumps({"event": "message", "text": "split", "level": "info"}) + "\n"
    with events.open("w") as f:
        f.write(line[:10])
        f.flush()
        time.sleep(0.1)
        assert sink.events == []
        f.write(line[10:] + "not json\n")
    stop.set()
    thread.join(5)
    assert sink.of("message") == [("info", "split")]  # the broken line is skipped, not fatal


def test_a_failing_sink_stops_the_writer_with_its_error(tmp_path: Path) -> None:
    class Failing(RecordingSink):
        def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
            raise RuntimeError("database gone")

    events = tmp_path / "events.jsonl"
    writer = EventFileSink(events, poll_s=0.01)
    with EventRelay(events, Failing(), poll_s=0.01) as relay:
        with pytest.raises(EventConsumerError, match="database gone"):
            writer.checkpoint_saved(1, tmp_path, {})
        with pytest.raises(EventConsumerError, match="database gone"):
            writer.message("nobody records this")
    with pytest.raises(RuntimeError, match="database gone"):
        relay.raise_error()


def test_a_consumer_that_is_gone_or_silent_is_an_error(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = EventFileSink(tmp_path / "a.jsonl", consumer_pid=dead.pid)
    with pytest.raises(EventConsumerError, match=f"pid {dead.pid}.* is gone"):
        gone.message("x")
    silent = EventFileSink(tmp_path / "b.jsonl", ack_timeout_s=0.2, poll_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(EventConsumerError, match=r"checkpoint of step 3 was not recorded within 0\.2 s"):
        silent.checkpoint_saved(3, tmp_path, {})
    assert time.monotonic() - t0 < 2


def test_a_writer_reopening_the_file_keeps_counting_its_lines(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    first = EventFileSink(events)
    first.message("one")
    first.close()
    consumer = RecordingSink()
    with EventRelay(events, consumer, poll_s=0.01):
        EventFileSink(events, poll_s=0.01).checkpoint_saved(2, tmp_path, {})
    assert [k for k, _ in consumer.events] == ["message", "checkpoint_saved"]
    assert json.loads(ack_path(events).read_text())["line"] == 2


def test_launch_result_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "launch_result.json"
    result = JobResult(
        status="succeeded",
        model_dir=tmp_path / "final",
        result_file=tmp_path / "results.csv",
        rollouts_file=tmp_path / "rollouts.jsonl",
        trained_tokens=42,
        checkpoints=[CheckpointInfo(step=3, path=tmp_path / "step-3", metrics={"step": 3, "loss": 0.25})],
    )
    write_result(path, result)
    assert read_result(path) == result
    write_result(path, JobResult(status="paused", snapshot_dir=tmp_path / "state"))
    assert read_result(path) == JobResult(status="paused", snapshot_dir=tmp_path / "state")
    write_result(path, error=TrainerError("bad batch", code="invalid_hyperparameters", param="openrft.x"))
    with pytest.raises(TrainerError) as err:
        read_result(path)
    assert (err.value.message, err.value.code, err.value.param) == (
        "bad batch",
        "invalid_hyperparameters",
        "openrft.x",
    )
