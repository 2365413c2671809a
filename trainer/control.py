"""Stopping a run: user cancel/pause requests and the ``max_minutes`` budget, checked between steps and inside
every forward pass (so a long generation stops within a token, not at the end of the step)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from trainer.interface import Control, NeverStop

if TYPE_CHECKING:
    import torch

StopKind = Literal["cancel", "pause"]


class StopRequested(Exception):
    """Raised from deep inside training or generation; caught by the pipeline."""

    def __init__(self, kind: StopKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind: StopKind = kind
        self.reason = reason


class Stopper:
    """Combines the service's :class:`Control` with a wall-clock budget."""

    def __init__(self, control: Control | None = None, *, max_minutes: float | None = None) -> None:
        self.control = control or NeverStop()
        self.started = time.monotonic()
        self.deadline = self.started + max_minutes * 60 if max_minutes else None
        self.max_minutes = max_minutes
        self.suspended = 0

    def requested(self, *, budget: bool = True) -> StopRequested | None:
        """The pending stop, if any. The budget is checked only at step boundaries (``budget=True``)."""
        if self.suspended:
            return None
        got = self.control.poll()
        if got == "cancel":
            return StopRequested("cancel", "cancelled by the user")
        if got == "pause":
            return StopRequested("pause", "paused by the user")
        if budget and self.deadline is not None and time.monotonic() >= self.deadline:
            return StopRequested("pause", f"max_minutes={self.max_minutes:g} reached")
        return None

    def check(self, *, budget: bool = True) -> None:
        stop = self.requested(budget=budget)
        if stop is not None:
            raise stop

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """No stops inside (a short critical section such as writing a checkpoint)."""
        self.suspended += 1
        try:
            yield
        finally:
            self.suspended -= 1

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stopping_criteria(self) -> Any:
        """A transformers StoppingCriteria that raises on cancel/pause (polled once per generated token)."""
        from transformers import StoppingCriteria

        stopper = self

        class _Poll(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
                stopper.check(budget=False)
                import torch

                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        return _Poll()

    @contextlib.contextmanager
    def watch_forward(self, model: torch.nn.Module) -> Iterator[None]:
        """Poll before every forward of ``model``: covers generation inside third-party trainers (TRL)."""

        def hook(module: Any, args: Any) -> None:
            self.check(budget=False)

        handle = model.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()
