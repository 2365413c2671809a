"""What ``jobs.follow`` shows, from events and the job: new-event detection and the progress numbers."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from openrft._follow import EventCursor, JobProgress, ProgressState, format_seconds
from openrft.types import FineTuningJob, FineTuningJobEvent


def event(i: int, message: str = "", data: dict[str, Any] | None = None) -> FineTuningJobEvent:
    return FineTuningJobEvent.construct(  # as the SDK builds a response's models: without validation
        id=f"ftevent-{i}", created_at=1_700_000_000 + i, level="info", message=message or f"event {i}",
        data=data, type="metrics" if data else "message", object="fine_tuning.job.event",
    )  # fmt: skip


def job(status: str = "running", estimated_finish: int | None = None) -> FineTuningJob:
    return FineTuningJob.construct(
        id="ftjob-1", created_at=1, model="m", organization_id="org", seed=1, status=status,
        training_file="file-1", estimated_finish=estimated_finish,
    )  # fmt: skip


def test_cursor_returns_only_new_events_oldest_first_and_stops_reading() -> None:
    cursor = EventCursor()
    assert [e.id for e in cursor.collect([event(2), event(1)])] == ["ftevent-1", "ftevent-2"]
    consumed: list[str] = []

    def newest_first() -> Iterator[FineTuningJobEvent]:
        for e in (event(4), event(3), event(2), event(1)):
            consumed.append(e.id)
            yield e

    assert [e.id for e in cursor.collect(newest_first())] == ["ftevent-3", "ftevent-4"]
    assert consumed == ["ftevent-4", "ftevent-3", "ftevent-2"]  # older pages are never fetched
    assert cursor.collect([event(4), event(3)]) == []


def test_progress_state_from_openai_and_openrft_metric_shapes() -> None:
    state = ProgressState()
    state.apply_event(event(1, "starting"))
    assert (state.step, state.total, state.train_reward) == (0, None, None)
    state.apply_event(event(2, data={"step": 1, "total_steps": 8, "stage": "rl", "train_mean_reward": 0.25}))
    state.apply_event(event(3, data={"step": 2, "total_steps": 8, "scores": {"valid_reward_mean": 0.5}}))
    assert (state.step, state.total, state.stage) == (2, 8, "rl")
    assert (state.train_reward, state.valid_reward) == (0.25, 0.5)
    fields = state.fields()
    assert (fields["train"], fields["valid"]) == ("0.250", "0.500")


def test_time_left_comes_from_the_jobs_estimate() -> None:
    state = ProgressState()
    state.apply_job(job(estimated_finish=None))
    assert state.time_left() == "estimating..."
    now = time.time()
    state.apply_job(job(estimated_finish=int(now) + 125))
    assert state.time_left(now=now) in ("2m05s left", "2m04s left")
    state.apply_job(job(estimated_finish=int(now) - 30))  # a running job past its estimate: never "0s left"
    assert state.time_left(now=now) == "past the estimate, re-estimating..."
    state.apply_job(job(status="succeeded", estimated_finish=int(now) + 125))
    assert state.time_left(now=now) == "succeeded"
    assert [format_seconds(s) for s in (0, 59, 61, 3725, -5)] == ["0s", "59s", "1m01s", "1h02m", "0s"]


def test_progress_prints_events_verbatim_and_the_bar() -> None:
    out = io.StringIO()
    with JobProgress(console=Console(file=out, width=200)) as progress:
        progress.update(
            job(), [event(1, "Loading [model] weights"), event(2, data={"step": 3, "total_steps": 4})]
        )
        progress.update(job(status="succeeded"), [])
    text = out.getvalue()
    assert "Loading [model] weights" in text  # brackets are not taken as rich markup
    assert "step 3/4" in text and "succeeded" in text
    quiet = io.StringIO()
    seen: list[str] = []
    with JobProgress(
        console=Console(file=quiet), show=False, on_event=lambda e: seen.append(e.id)
    ) as progress:
        progress.update(job(), [event(1)])
    assert quiet.getvalue() == "" and seen == ["ftevent-1"]
