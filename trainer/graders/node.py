"""A compiled grader: the node a grader type builds from its spec, and what it grades with and returns.

A node grades a whole batch at once (``scopes``: one ``{"sample", "item"}`` per sample) on the engine's
event loop, using what the engine's runtime shares (HTTP clients, semaphores, thread pools). A failing
sample gets an Outcome with score 0 and its error; it never fails the batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from trainer.graders.errors import GradingError
from trainer.graders.settings import GraderSettings
from trainer.graders.templates import Template

Scope = dict[str, Any]


@dataclass
class Outcome:
    """One grader's result for one sample."""

    score: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)
    sampled_model: str | None = None
    sub_scores: dict[str, float] = field(default_factory=dict)
    """For multi graders: each sub-grader's score, by its key in ``graders``."""

    @classmethod
    def failed(cls, exc: GradingError) -> Outcome:
        return cls(0.0, [(exc.key, exc.detail)])


class Runtime(Protocol):
    """What nodes share while grading (the engine owns it): settings, HTTP clients, semaphores, pools."""

    @property
    def settings(self) -> GraderSettings: ...
    @property
    def model_sem(self) -> asyncio.Semaphore: ...
    @property
    def endpoint_sem(self) -> asyncio.Semaphore: ...
    @property
    def cpu_pool(self) -> concurrent.futures.Executor: ...
    @property
    def sandbox_pool(self) -> concurrent.futures.Executor: ...
    @property
    def closers(self) -> list[Callable[[], None]]:
        """Called when the engine closes (python graders' sandboxes)."""
        ...

    def client(self, pool: str = "") -> Any:
        """The shared ``httpx.AsyncClient`` of a connection pool."""
        ...


class Node:
    """A compiled grader; subclasses implement ``_grade`` for a batch of scopes."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.type: str = spec["type"]

    async def grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        start = time.perf_counter()
        try:
            return await self._grade(scopes, rt, timing)
        finally:
            timing[self.name] = timing.get(self.name, 0.0) + time.perf_counter() - start

    async def _grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        raise NotImplementedError


class PairNode(Node):
    """A node that compares each sample's rendered ``input`` with its rendered ``reference``; a sample whose
    templates do not render fails alone (``invalid_variable_error``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.input, self.reference = Template.parse(spec["input"]), Template.parse(spec["reference"])

    async def _grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        out: list[Outcome] = [Outcome() for _ in scopes]
        todo: list[tuple[int, str, str]] = []
        for i, scope in enumerate(scopes):
            try:
                todo.append((i, self.input.render(scope), self.reference.render(scope)))
            except GradingError as exc:
                out[i] = Outcome.failed(exc)
        if todo:
            scored = await self.score_pairs([(text, ref) for _, text, ref in todo], rt)
            for (i, _, _), outcome in zip(todo, scored, strict=True):
                out[i] = outcome
        return out

    async def score_pairs(self, pairs: list[tuple[str, str]], rt: Runtime) -> list[Outcome]:
        """One Outcome per (rendered input, rendered reference)."""
        raise NotImplementedError


def add_usage(total: dict[str, dict[str, int]], model_name: str, counts: dict[str, int]) -> None:
    into = total.setdefault(model_name, {})
    for key, value in counts.items():
        into[key] = into.get(key, 0) + value
