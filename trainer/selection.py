"""Which model a job keeps: paired comparisons of models evaluated on the same validation rows.

Every evaluated model (the base at step 0, SFT's last step, RL's checkpoints) is graded on the same rows, so two
models are compared by the per-row differences of their scores (a paired interval), not by their means alone:
with 40 rows a mean moves by +-0.1 from sampling noise, and the best of several checkpoints by raw maximum is
biased upwards. A later model replaces an earlier one only where its paired 95% interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Paired:
    """``b - a`` over the same rows: the mean difference and its two-sided interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def better(self) -> bool:
        """``b`` is better than ``a`` with the interval's confidence."""
        return self.low > 0

    @property
    def worse(self) -> bool:
        return self.high < 0

    def describe(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal one: within 1% of the exact value for
    3 or more degrees of freedom, 0.1% for 5 or more)."""
    z = statistics.NormalDist().inv_cdf(p)
    if dof <= 0:
        return math.inf
    v = float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    """The paired t interval of ``mean(b - a)`` over rows scored by both (same order, same rows)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores of different rows: {len(a)} and {len(b)}")
    d = [y - x for x, y in zip(a, b, strict=True)]
    n = len(d)
    if n == 0:
        return Paired(0.0, -math.inf, math.inf, 0)
    mean = statistics.fmean(d)
    if n == 1:
        return Paired(mean, -math.inf, math.inf, 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(d) / math.sqrt(n)
    return Paired(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class Candidate:
    """One evaluated model: ``step`` 0 is the base model (no adapter)."""

    step: int
    stage: str
    """"base", "sft" or "rl"."""
    scores: list[float]
    """Mean grade per validation row, in the rows' order."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores) if self.scores else 0.0


@dataclass(frozen=True)
class Choice:
    chosen: Candidate
    steps: list[tuple[Candidate, Candidate, Paired, bool]]
    """Each comparison made, in order: (incumbent, challenger, challenger - incumbent, replaced)."""


def choose(candidates: Sequence[Candidate]) -> Choice:
    """The model to keep, from candidates in training order (base, SFT, RL checkpoints).

    Within a stage the best mean stands for the stage (its RL checkpoints were trained to raise this very
    reward); stages are then compared in order, and a later one replaces the model kept so far only when it is
    better on the same rows by a paired interval excluding 0. So a job whose training helped by less than the
    rows can tell keeps the earlier model (the base, if nothing beat it), and says so."""
    if not candidates:
        raise ValueError("no candidates")
    by_stage: dict[str, Candidate] = {}
    for c in candidates:
        best = by_stage.get(c.stage)
        if best is None or c.mean > best.mean + 1e-12:
            by_stage[c.stage] = c
    order = [by_stage[s] for s in dict.fromkeys(c.stage for c in candidates)]
    kept = order[0]
    made = []
    for challenger in order[1:]:
        if len(challenger.scores) != len(kept.scores):
            continue  # evaluated on other rows (a changed validation set): not comparable
        diff = paired_difference(kept.scores, challenger.scores)
        made.append((kept, challenger, diff, diff.better))
        if diff.better:
            kept = challenger
    return Choice(chosen=kept, steps=made)
