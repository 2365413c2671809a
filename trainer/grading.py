"""The job's grader as the pipeline uses it: batches of completions in, scores and error counts out.

All grading goes through the grader engine of ``trainer.graders`` (its batch API); this module only adds the
bookkeeping the pipeline reports (cumulative error counts, timing, token usage) and the pass threshold that
turns a score into "correct".
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.interface import TrainerError

if TYPE_CHECKING:
    from trainer.control import Stopper


@dataclass
class Grades:
    scores: list[float]
    errors: dict[str, int] = field(default_factory=dict)
    error_details: list[str] = field(default_factory=list)
    seconds: float = 0.0
    token_usage: dict[str, Any] = field(default_factory=dict)


class Grader:
    """Opened once per run (``with Grader(...) as g``); ``grade`` is called per batch of completions."""

    def __init__(
        self,
        spec: dict[str, Any],
        settings: dict[str, Any] | None = None,
        *,
        pass_threshold: float | None = None,
        stopper: Stopper | None = None,
    ) -> None:
        self.spec = spec
        self.stopper = stopper
        """Polled while a batch is graded: a cancel or pause stops the batch (its requests are dropped)."""
        self.settings = settings or {}
        self.pass_threshold = pass_threshold if pass_threshold is not None else 1.0
        self._threshold_override = pass_threshold
        self.error_totals: Counter[str] = Counter()
        self.recent_details: deque[str] = deque(maxlen=2)
        """The last error details the grader reported (what a message about its failures quotes)."""
        self.seconds = 0.0
        self.calls = 0
        self.partial_credit = False
        """Whether a grade strictly between 0 and the pass threshold was seen: the grader gives partial
        credit (a python grader's range is only known by its grades)."""
        self._engine: Any = None

    def __enter__(self) -> Grader:
        from trainer.graders import GraderEngine, GraderSettings, pass_threshold, validate_grader

        try:
            # The normalized spec has the defaults filled in (e.g. multiple_choice templates).
            self.spec = validate_grader(self.spec)
        except Exception as e:
            param = getattr(e, "param", None)
            where = f"method.reinforcement.{param}" if param else "method.reinforcement.grader"
            raise TrainerError(f"Invalid grader: {e}", code="invalid_grader", param=where) from e
        if self._threshold_override is None:
            self.pass_threshold = pass_threshold(self.spec)
        self._engine = GraderEngine(self.spec, GraderSettings(**self.settings))
        self._engine.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._engine is not None:
            self._engine.__exit__(*exc)
            self._engine = None

    def grade(self, completions: list[str], items: list[dict[str, Any]]) -> Grades:
        if self._engine is None:
            raise RuntimeError("Grader used outside its context manager")
        if not completions:
            return Grades(scores=[])
        stopper = self.stopper
        if stopper is not None:
            stopper.check(budget=False)  # between batches too: a stop never waits for the next one
        t0 = time.perf_counter()
        res = self._engine.grade_batch(
            list(completions),
            list(items),
            interrupt=(lambda: stopper.check(budget=False)) if stopper is not None else None,
        )
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.calls += 1
        errors = {k: int(v) for k, v in (getattr(res, "errors", None) or {}).items() if v}
        self.error_totals.update(errors)
        details = getattr(res, "error_details", None) or []
        self.recent_details.extend(str(d)[:300] for d in list(details)[:2])
        scores = [float(s) if s is not None else 0.0 for s in res.scores]
        self.partial_credit = self.partial_credit or any(0 < s < self.pass_threshold - 1e-9 for s in scores)
        return Grades(
            scores=scores,
            errors=errors,
            error_details=[str(d) for d in (details.values() if isinstance(details, dict) else details)][:5],
            seconds=dt,
            token_usage=dict(getattr(res, "token_usage", None) or {}),
        )

    def failures_since(self, before: Counter[str]) -> str:
        """A sentence on the grader's own failures since the ``error_totals`` snapshot ``before`` ("" if none):
        the zeros a stage reports may be the grader's, not the model's, and the user must be told which."""
        from trainer.watch import grader_failures

        failed = grader_failures(dict(self.error_totals - before))
        if not failed:
            return ""
        kinds = ", ".join(f"{k}: {v}" for k, v in failed.items())
        example = f" (e.g. {self.recent_details[-1]})" if self.recent_details else ""
        return (
            f" The grader itself failed on {sum(failed.values())} of these samples ({kinds}){example}: they "
            "scored 0 for the grader's failure, not the model's. Check the grader with POST "
            "/v1/fine_tuning/alpha/graders/run on a training row."
        )

    def correct(self, score: float) -> bool:
        """Graded correct: at least the grader's pass threshold (its maximum unless the job sets one)."""
        return score >= self.pass_threshold - 1e-9
