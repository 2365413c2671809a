"""Following a job: new events in order, and a progress bar fed by its ``metrics`` events.

The bar shows step/total, the latest train and validation rewards, and the time left from the job's own
``estimated_finish`` (the service's estimate, refreshed as it trains). The I/O loop (sync or async) lives in
the jobs resource; this module only consumes what it fetched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from openai.types.fine_tuning import FineTuningJobEvent
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from openrft.types.fine_tuning_job import FineTuningJob

EventCallback = Callable[[FineTuningJobEvent], None]
_LEVEL_STYLE = {"warn": "yellow", "error": "bold red"}


class EventCursor:
    """Which events were already seen. The API lists newest first, so new events are those before the
    newest one seen last time; ``collect`` returns them oldest first."""

    def __init__(self) -> None:
        self.newest_id: str | None = None

    def collect(self, newest_first: Iterable[FineTuningJobEvent]) -> list[FineTuningJobEvent]:
        fresh: list[FineTuningJobEvent] = []
        for event in newest_first:
            if event.id == self.newest_id:
                break
            fresh.append(event)
        if fresh:
            self.newest_id = fresh[0].id
        fresh.reverse()
        return fresh


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _reward(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


class ProgressState:
    """The numbers the bar shows, updated from metrics events and the job."""

    def __init__(self) -> None:
        self.step = 0
        self.total: int | None = None
        self.stage: str | None = None
        self.train_reward: float | None = None
        self.valid_reward: float | None = None
        self.estimated_finish: int | None = None
        self.status = ""

    def apply_event(self, event: FineTuningJobEvent) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.type != "metrics" or "step" not in data:
            return
        self.step = int(data["step"])
        if data.get("total_steps"):
            self.total = int(data["total_steps"])
        self.stage = data.get("stage") or self.stage
        scores = data.get("scores") or {}
        train = data.get("train_mean_reward", scores.get("train_reward_mean"))
        valid = data.get("full_valid_mean_reward", scores.get("valid_reward_mean"))
        if isinstance(train, int | float):
            self.train_reward = float(train)
        if isinstance(valid, int | float):
            self.valid_reward = float(valid)

    def apply_job(self, job: FineTuningJob) -> None:
        self.status = job.status
        self.estimated_finish = job.estimated_finish

    def time_left(self, now: float | None = None) -> str:
        if self.status and self.status not in ("running", "queued", "validating_files"):
            return self.status
        if self.estimated_finish is None:
            return "estimating..."
        left = self.estimated_finish - (now or time.time())
        if left < 1:  # the service re-estimates as stages end; until it does, say so rather than "0s left"
            return "past the estimate, re-estimating..."
        return format_seconds(left) + " left"

    def fields(self) -> dict[str, Any]:
        return {
            "train": _reward(self.train_reward),
            "valid": _reward(self.valid_reward),
            "eta": self.time_left(),
            "stage": self.stage or self.status or "starting",
        }


class JobProgress:
    """Prints each new event and keeps a live progress bar under them (when ``show`` and a terminal)."""

    def __init__(
        self, *, console: Console | None = None, show: bool = True, on_event: EventCallback | None = None
    ):
        self.console = console or Console(stderr=True)
        self.show = show
        self.on_event = on_event
        self.state = ProgressState()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> JobProgress:
        if self.show:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[stage]:>8}"),
                BarColumn(bar_width=30),
                TextColumn("step {task.completed:.0f}/{task.fields[total_text]}"),
                TextColumn("train reward [cyan]{task.fields[train]}"),
                TextColumn("valid reward [green]{task.fields[valid]}"),
                TextColumn("[dim]{task.fields[eta]}"),
                console=self.console,
                transient=False,
                refresh_per_second=4,
            )
            self._progress.start()
            self._task = self._progress.add_task("job", total=None, total_text="?", **self.state.fields())
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()

    def update(self, job: FineTuningJob, events: list[FineTuningJobEvent]) -> None:
        for event in events:
            self.state.apply_event(event)
            if self.on_event is not None:
                self.on_event(event)
            if self.show:
                self._print(event)
        self.state.apply_job(job)
        self._refresh()

    def _print(self, event: FineTuningJobEvent) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.created_at))
        style = _LEVEL_STYLE.get(event.level, "")
        self.console.print(
            f"[dim]{stamp}[/dim] {escape(event.message)}", style=style, markup=True, highlight=False
        )

    def _refresh(self) -> None:
        if self._progress is None or self._task is None:
            return
        total = self.state.total
        self._progress.update(
            self._task,
            completed=self.state.step,
            total=total,
            total_text=str(total) if total else "?",
            **self.state.fields(),
        )
