"""The batch grading engine: one compiled grader tree, graded over many (sample, item) pairs at once.

The engine owns a private event loop in a background thread, so the synchronous ``grade_batch`` works from
any thread (with or without a running loop of its own) and ``agrade_batch`` from any loop, while all HTTP
traffic shares one ``httpx.AsyncClient`` and bounded semaphores. Model and endpoint graders run
concurrently; python graders run in warm sandboxes (see sandbox.py) from a small thread pool; CPU-bound
text metrics run in a worker thread so the loop keeps serving I/O. A failing sample scores 0 and is counted
under OpenAI's error keys; it never fails the batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trainer.graders import registry
from trainer.graders.errors import DETAIL_KEYS, ERROR_KEYS
from trainer.graders.node import Outcome, add_usage
from trainer.graders.settings import GraderSettings
from trainer.graders.templates import Sample
from trainer.graders.validation import validate_grader


@dataclass
class BatchResult:
    """Scores of a batch plus what OpenAI's metrics report: error counts, timing and token usage."""

    scores: list[float]
    sub_scores: dict[str, list[float]]
    errors: dict[str, int]
    error_details: list[str]
    timing: dict[str, float]
    token_usage: dict[str, dict[str, int]]
    sample_errors: list[list[str]]
    """Per sample, the error keys it hit (empty when it was graded cleanly)."""

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0

    @property
    def error_rate(self) -> float:
        return (
            sum(1 for e in self.sample_errors if e) / len(self.sample_errors) if self.sample_errors else 0.0
        )


class _Runtime:
    """What grader nodes share (``trainer.graders.node.Runtime``): settings, the HTTP clients, semaphores,
    thread pools, sandboxes."""

    def __init__(self, settings: GraderSettings) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = {}
        self.model_sem = asyncio.Semaphore(settings.model_concurrency)
        self.endpoint_sem = asyncio.Semaphore(settings.endpoint_concurrency)
        self.cpu_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="grader-cpu")
        self.sandbox_pool = concurrent.futures.ThreadPoolExecutor(
            settings.sandbox_workers, thread_name_prefix="grader-sandbox"
        )
        self.closers: list[Any] = []

    def client(self, pool: str = "") -> Any:
        """The HTTP client of a connection pool. Endpoint graders connect to an address, not a name, and
        connections are pooled by address: each host name gets its own pool, so a TLS connection made (and
        its certificate checked) for one name never carries another name's requests."""
        if pool not in self._clients:
            import httpx

            limit = max(self.settings.model_concurrency, self.settings.endpoint_concurrency)
            self._clients[pool] = httpx.AsyncClient(limits=httpx.Limits(max_connections=limit))
        return self._clients[pool]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        for close in self.closers:
            close()
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self.sandbox_pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _as_sample(sample: Sample | str | dict[str, Any]) -> Sample:
    if isinstance(sample, Sample):
        return sample
    if isinstance(sample, str):
        return Sample.from_text(sample)
    return Sample(**sample)


class GraderEngine:
    """Grades batches with one grader spec. Use as a context manager, or call :meth:`close`."""

    def __init__(self, spec: dict[str, Any], settings: GraderSettings | None = None) -> None:
        self.settings = settings or GraderSettings()
        self.spec = validate_grader(spec)
        self.root = registry.build_node(self.spec, self.settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runtime: _Runtime | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # --- loop thread -----------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the grader engine is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._runtime = _Runtime(self.settings)
                # The thread must not reference the engine, so an engine nobody closed can be collected.
                self._thread = threading.Thread(
                    target=_run_loop, args=(loop,), name="grader-engine", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def _submit(self, samples: Sequence[Sample | str | dict[str, Any]], items: Sequence[Any]) -> Any:
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(self._grade(samples, items), loop)

    def grade_batch(
        self,
        samples: Sequence[Sample | str | dict[str, Any]],
        items: Sequence[Any],
        *,
        interrupt: Callable[[], None] | None = None,
        poll_s: float = 0.25,
    ) -> BatchResult:
        """Grade ``samples[i]`` against ``items[i]``; blocks. Not callable from the engine's own loop.

        ``interrupt`` is called every ``poll_s`` seconds while the batch runs; what it raises (a job's cancel
        or pause) cancels the batch's requests still in flight and is raised here: a batch of model-grader
        calls can take minutes, and a stop must not wait for it."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("grade_batch called from the engine's own loop; use agrade_batch")
        future = self._submit(samples, items)
        if interrupt is None:
            return future.result()
        while True:
            try:
                return future.result(timeout=poll_s)
            except concurrent.futures.TimeoutError:
                try:
                    interrupt()
                except BaseException:
                    future.cancel()
                    raise

    async def agrade_batch(
        self, samples: Sequence[Sample | str | dict[str, Any]], items: Sequence[Any]
    ) -> BatchResult:
        """Async twin of :meth:`grade_batch`, usable from any event loop."""
        return await asyncio.wrap_future(self._submit(samples, items))

    def grade_one(self, sample: Sample | str | dict[str, Any], item: Any) -> tuple[Outcome, dict[str, float]]:
        """One sample's full outcome (sub-scores, errors, usage) and timing: what graders/run reports."""
        loop = self._ensure_loop()
        fut = asyncio.run_coroutine_threadsafe(self._grade_outcomes([sample], [item]), loop)
        outcomes, timing = fut.result()
        return outcomes[0], timing

    async def _grade_outcomes(
        self, samples: Sequence[Sample | str | dict[str, Any]], items: Sequence[Any]
    ) -> tuple[list[Outcome], dict[str, float]]:
        if len(samples) != len(items):
            raise ValueError(f"{len(samples)} samples but {len(items)} items")
        assert self._runtime is not None
        scopes = [
            {"sample": _as_sample(s).as_dict(), "item": it} for s, it in zip(samples, items, strict=True)
        ]
        timing: dict[str, float] = {}
        outcomes = await self.root.grade(scopes, self._runtime, timing) if scopes else []
        return outcomes, timing

    async def _grade(
        self, samples: Sequence[Sample | str | dict[str, Any]], items: Sequence[Any]
    ) -> BatchResult:
        outcomes, timing = await self._grade_outcomes(samples, items)
        errors = dict.fromkeys(ERROR_KEYS, 0)
        details: list[str] = []
        usage: dict[str, dict[str, int]] = {}
        sub_scores: dict[str, list[float]] = {}
        limit, chars = self.settings.max_error_details, self.settings.max_error_detail_chars
        for i, o in enumerate(outcomes):
            for key, detail in o.errors:
                errors[key] += 1
                if len(details) < limit:
                    details.append(f"sample {i}: {key}: {detail}"[:chars])
            for model_name, counts in o.usage.items():
                add_usage(usage, model_name, counts)
            for key, value in o.sub_scores.items():
                sub_scores.setdefault(key, []).append(value)
        return BatchResult(
            scores=[o.score for o in outcomes],
            sub_scores=sub_scores,
            errors=errors,
            error_details=details,
            timing=timing,
            token_usage=usage,
            sample_errors=[sorted({k for k, _ in o.errors}) for o in outcomes],
        )

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, runtime = self._loop, self._thread, self._runtime
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:  # collected on its own loop: cannot wait for itself
            for close in runtime.closers if runtime is not None else []:
                close()
            loop.call_soon(loop.stop)
            return
        if runtime is not None:
            asyncio.run_coroutine_threadsafe(runtime.aclose(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> GraderEngine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort for engines never closed: the sandboxes die with their parent anyway.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass


# --------------------------------------------------------------------------------------------------
# graders/run and "graded correct"
# --------------------------------------------------------------------------------------------------


def run_grader(
    spec: dict[str, Any], model_sample: str, item: dict[str, Any] | None, settings: GraderSettings
) -> dict[str, Any]:
    """One sample, answered as OpenAI's ``POST /fine_tuning/alpha/graders/run`` body."""
    started = time.perf_counter()
    with GraderEngine(spec, settings) as engine:
        outcome, _ = engine.grade_one(Sample.from_text(model_sample), item)
        normalized = engine.spec
    errors: dict[str, Any] = {}
    for key in ERROR_KEYS:
        hits = [d for k, d in outcome.errors if k == key]
        errors[key] = bool(hits)
        if key in DETAIL_KEYS:
            if key == "python_grader_server_error":
                errors[DETAIL_KEYS[key]] = "sandbox_unavailable" if hits else None
            else:
                errors[DETAIL_KEYS[key]] = (
                    "\n".join(hits)[: settings.max_error_detail_chars] if hits else None
                )
    other_details = [f"{k}: {d}" for k, d in outcome.errors if k not in DETAIL_KEYS]
    sub = dict(outcome.sub_scores)
    # OpenAI's SDK types metadata.token_usage as one int (the total); the per-model counts are in
    # model_grader_token_usage_per_model.
    total = sum(int(c.get("total_tokens", 0)) for c in outcome.usage.values()) if outcome.usage else None
    metadata: dict[str, Any] = {
        "name": normalized["name"],
        "type": normalized["type"],
        "errors": errors,
        "execution_time": time.perf_counter() - started,
        "scores": sub or {normalized["name"]: outcome.score},
        "token_usage": total,
        "sampled_model_name": outcome.sampled_model,
    }
    if other_details:
        metadata["error_details"] = other_details  # an extension: what went wrong, for the other keys
    return {
        "reward": outcome.score,
        "sub_rewards": sub,
        "model_grader_token_usage_per_model": outcome.usage,
        "metadata": metadata,
    }


def pass_threshold(spec: dict[str, Any]) -> float:
    """The score a sample needs to count as graded correct (rejection sampling, pass rates).

    ``pass_threshold`` when the spec sets one; otherwise the grader type's maximum: ``range[1]`` for
    score_model, 1.0 for everything else (string_check, label_model and multiple_choice are 1/0; a multi
    formula and a python grader are expected to give 1.0 to a fully correct answer).
    """
    if spec.get("pass_threshold") is not None:
        return float(spec["pass_threshold"])
    kind = registry.get(spec.get("type"))
    return kind.pass_threshold(spec) if kind is not None else 1.0


def passes(spec: dict[str, Any], score: float) -> bool:
    """Whether ``score`` from grader ``spec`` counts as graded correct (see :func:`pass_threshold`)."""
    return score >= pass_threshold(spec) - 1e-9
