"""Reasoning synthesis by rejection sampling (the paper's SFT data), with the reference-answer fallback.

For each training question the teacher samples traces in rounds until one is graded correct or the
``samples_per_question`` budget is spent; only graded-correct traces are kept. Questions without a correct
trace fall back to the reference response (a worked reasoning plus the reference answer, itself checked by the
grader) when ``fallback_to_reference`` is on, else they are left out of SFT. Progress is saved after every round,
so a pause or a killed worker resumes mid-synthesis.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from trainer.checkpoints import atomic_write_text
from trainer.sft import trace_example
from trainer.teachers import make_teacher

if TYPE_CHECKING:
    from trainer.data import Row
    from trainer.grading import Grader
    from trainer.prompts import Messages
    from trainer.stages.context import RunContext
    from trainer.teachers import Teacher


FIRST_ROUND_WITHOUT_REFERENCE = 4
"""Tries per question in the first best-of-k round of a row without a reference answer."""
MIN_ROUND_YIELD = 0.1
"""A growing round is sampled only while the previous one solved at least this share of the questions it tried:
below it, the tries cost more than RL spends to learn the same (bench/results/quality.md)."""


@dataclass
class Synthesized:
    uid: str
    tries: int = 0
    response: str | None = None
    source: str | None = None
    """"sampled" (a graded-correct trace), "partial" (the best of its samples, above their mean, under a
    partial-credit grader), "reference" (fallback) or None (dropped)."""
    best_score: float | None = None
    score_sum: float = 0.0
    """Sum of the grades of every try (their mean is what the best try must beat to count as "partial")."""
    best_text: str | None = None
    """The best-graded try so far (kept for the partial-credit rule)."""

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.tries if self.tries else None


@dataclass(frozen=True)
class Budget:
    """How one row is sampled: at most ``tries`` in all, ``first`` in the first round; later rounds grow with the
    share of its class still unsolved (``first / share``), so a round costs about as much as the first while
    the questions left get more tries each: best-of-k where it pays."""

    tries: int
    first: int = 1
    grow: bool = False
    """False: ``first`` tries a round throughout (the paper's procedure, one a round)."""
    mean: float | None = None
    """The class's tries on average per question (its whole budget: ``mean`` x its questions), if bounded."""
    partial: bool = False
    """Keep the best try of an unsolved question when it beats the mean of its tries (grader-only rows)."""


def rejection_sample(
    rows: list[Row],
    prompts: list[Messages],
    teacher: Teacher,
    grader: Grader,
    *,
    budget: int | Sequence[Budget],
    temperature: float,
    max_new_tokens: int,
    results: dict[str, Synthesized],
    per_round: int = 1,
    on_round: Any = None,
    min_first_round: int = 20,
) -> dict[str, Synthesized]:
    """Sample until each question has one graded-correct trace or its budget of tries is spent; updates
    ``results`` (an int ``budget``: that many tries per row, ``per_round`` a round, the paper's procedure).

    A first round in which not one of at least ``min_first_round`` questions was solved ends the sampling: the
    teacher does not produce what the grader accepts (a reply format it does not know yet), and the remaining
    tries would cost as much for as little."""
    budgets = [Budget(budget, per_round)] * len(rows) if isinstance(budget, int) else list(budget)
    yields: dict[Budget, float] = {}  # per budget class: the share of the last round's questions it solved
    for r in rows:
        results.setdefault(r.uid, Synthesized(uid=r.uid))
    while True:
        tried = [results[r.uid] for r in rows]
        first_round_done = len(tried) >= min_first_round and min(t.tries for t in tried) >= 1
        if first_round_done and not any(t.source == "sampled" for t in tried):
            return results
        asks = _next_round(rows, budgets, results, yields)
        if not asks:
            return results
        asked = dict.fromkeys(budgets, 0)
        before = _solved_by_class(rows, budgets, results)
        for n, todo in asks.items():
            outs = teacher.sample(
                [prompts[i] for i in todo], n=n, temperature=temperature, max_new_tokens=max_new_tokens
            )
            flat = [(i, c) for i, cs in zip(todo, outs, strict=True) for c in cs]
            grades = grader.grade([c for _, c in flat], [rows[i].item for i, _ in flat])
            for (i, text), score in zip(flat, grades.scores, strict=True):
                res = results[rows[i].uid]
                res.score_sum += score
                if res.source == "sampled":
                    continue  # first correct trace wins (the paper stops at the first)
                if res.best_score is None or score > res.best_score:
                    res.best_score, res.best_text = score, text
                if grader.correct(score) and text.strip():
                    res.response, res.source = text, "sampled"
            for i in todo:
                results[rows[i].uid].tries += n
                asked[budgets[i]] += 1
        after = _solved_by_class(rows, budgets, results)
        for b, n_asked in asked.items():
            if n_asked:
                yields[b] = (after[b] - before[b]) / n_asked
        if on_round is not None:
            on_round(results)


def _solved_by_class(
    rows: list[Row], budgets: list[Budget], results: dict[str, Synthesized]
) -> dict[Budget, int]:
    out = dict.fromkeys(budgets, 0)
    for r, b in zip(rows, budgets, strict=True):
        out[b] += results[r.uid].source == "sampled"
    return out


def _next_round(
    rows: list[Row], budgets: list[Budget], results: dict[str, Synthesized], yields: dict[Budget, float]
) -> dict[int, list[int]]:
    """Tries per unsolved row this round, as {tries: row indexes}; a growing class goes on only while its rounds
    pay (``MIN_ROUND_YIELD``)."""
    classes: dict[Budget, list[int]] = {}
    for i, b in enumerate(budgets):
        classes.setdefault(b, []).append(i)
    asks: dict[int, list[int]] = {}
    for b, members in classes.items():
        unsolved = [i for i in members if results[rows[i].uid].source != "sampled"]
        todo = [i for i in unsolved if results[rows[i].uid].tries < b.tries]
        if not todo or (b.grow and yields.get(b, 1.0) < MIN_ROUND_YIELD):
            continue
        started = any(results[rows[i].uid].tries for i in members)
        grow = b.first
        if started and b.grow:
            grow = math.ceil(b.first * len(members) / len(unsolved))
        if b.mean is not None:
            left = int(b.mean * len(members)) - sum(results[rows[i].uid].tries for i in members)
            if left < len(todo):
                continue
            grow = min(grow, left // len(todo))
        for i in todo:
            n = min(max(1, grow), b.tries - results[rows[i].uid].tries)
            asks.setdefault(n, []).append(i)
    return asks


def keep_partial(res: Synthesized) -> bool:
    """A partial-credit try worth imitating: the best of its question's tries, graded above their mean and
    above 0 (the model's own better answer where none was fully right: expert iteration's step)."""
    mean = res.mean_score
    return (
        res.best_text is not None
        and bool(res.best_text.strip())
        and res.best_score is not None
        and mean is not None
        and res.best_score > 0
        and res.best_score > mean + 1e-9
    )


def synthesize_traces(ctx: RunContext) -> list[dict[str, Any]]:
    """The SFT examples of a reinforcement job (computing, or reloading, synthesis results).

    Rows with a reference answer get the paper's procedure (``samples_per_question`` tries, one a round, the
    reference as the fallback). Rows without one (a grader-only task: the rows hold only what the grader
    reads) are what synthesis is for: best-of-k rounds that grow with the share still unsolved, up to
    ``samples_without_reference`` tries, and under a partial-credit grader the best try of a question none
    solved is kept when it beats the mean of its tries."""
    from trainer.stages.references import references

    plan = ctx.plan
    ext = ctx.options
    rows = ctx.train_rows
    refs = references(ctx)
    grader = ctx.need_grader()
    with_ref = Budget(plan.samples_per_question)
    without_ref = Budget(
        2 * plan.samples_without_reference,
        first=min(FIRST_ROUND_WITHOUT_REFERENCE, plan.samples_without_reference),
        grow=True,
        mean=plan.samples_without_reference,
        partial=True,  # only ever applies under a partial-credit grader: a 0/1 grader's best try is 0 or solved
    )
    budgets = [with_ref if refs.get(r.uid) else without_ref for r in rows]
    path = ctx.store.artifact("synthesis.json")
    results: dict[str, Synthesized] = {}
    if path.is_file():
        results = {d["uid"]: Synthesized(**d) for d in json.loads(path.read_text())}

    def save(res: dict[str, Synthesized]) -> None:
        atomic_write_text(path, json.dumps([asdict(r) for r in res.values()]))

    def progress(res: dict[str, Synthesized]) -> None:
        save(res)
        solved = sum(r.source == "sampled" for r in res.values())
        tries = sum(r.tries for r in res.values())
        left = [
            r
            for r, b in zip(rows, budgets, strict=True)
            if res[r.uid].source != "sampled" and res[r.uid].tries < b.tries
        ]
        head = (
            f"Synthesis: {solved}/{len(res)} questions have a graded-correct trace after {tries} tries "
            f"({solved / max(1, tries):.0%} of tries solved a question)"
        )
        if not left or solved == len(res):
            ctx.sink.message(head + ".")
        elif solved == 0 and len(res) >= 20:
            ctx.sink.message(head + ": no try was correct, so no further round is sampled.", level="warn")
        else:
            ctx.sink.message(head + f"; the next round samples the {len(left)} unsolved ones.")

    if "synthesis" not in ctx.state.done:
        prompts = [ctx.prompt_for(r) for r in rows]
        if any(b.tries > 0 for b in budgets):
            teacher = make_teacher(
                ext.sft.teacher,
                model=ctx.base_model,
                tokenizer=ctx.tokenizer,
                stopper=ctx.stopper,
                allowed_hosts=ctx.private_url_hosts,
            )
            n_without = sum(b is without_ref for b in budgets)
            plans = []
            if n_without < len(rows):
                plans.append(
                    f"up to {with_ref.tries} tries for each of the {len(rows) - n_without} with a reference"
                )
            if n_without:
                plans.append(
                    f"best-of-k rounds for the {n_without} without one, {without_ref.mean:g} tries per question on "
                    f"average, more for the ones still unsolved (at most {without_ref.tries})"
                )
            ctx.sink.message(
                f"Synthesizing reasoning traces from {teacher.name} (temperature {ext.sft.temperature}, max "
                f"{plan.max_completion_length} new tokens): {'; '.join(plans)}."
            )
            t0 = time.perf_counter()
            before = ctx.need_grader().error_totals.copy()
            rejection_sample(
                rows,
                prompts,
                teacher,
                grader,
                budget=budgets,
                temperature=ext.sft.temperature,
                max_new_tokens=plan.max_completion_length,
                results=results,
                on_round=progress,
            )
            ctx.state.counters["synthesis_s"] = time.perf_counter() - t0
            ctx.state.counters["synthesis_grader_note"] = ctx.need_grader().failures_since(before)
        for r, b in zip(rows, budgets, strict=True):
            res = results.setdefault(r.uid, Synthesized(uid=r.uid))
            if res.response is not None:
                continue
            if ext.sft.fallback_to_reference and refs.get(r.uid):
                res.response, res.source = refs[r.uid], "reference"
            elif b.partial and keep_partial(res):
                res.response, res.source = res.best_text, "partial"
        save(results)
        counts = {
            "sampled": sum(r.source == "sampled" for r in results.values()),
            "partial": sum(r.source == "partial" for r in results.values()),
            "fell_back": sum(r.source == "reference" for r in results.values()),
            "dropped": sum(r.source is None for r in results.values()),
            "tries": sum(r.tries for r in results.values()),
        }
        ctx.state.counters["synthesis"] = counts
        ctx.sink.metrics(
            f"Synthesis: {counts['sampled']}/{len(rows)} questions have a graded-correct sampled trace"
            + (
                f", {counts['partial']} a partly correct one better than their average try"
                if grader.partial_credit
                else ""
            )
            + f", {counts['fell_back']} fell back to the reference answer, {counts['dropped']} left out of SFT "
            f"({counts['tries']} tries).",
            {
                "step": 0,
                "stage": "synthesis",
                "synthesis": counts,
                "samples_per_question": with_ref.tries,
                "samples_without_reference": without_ref.tries,
            },
        )
        if not counts["sampled"] and not counts["fell_back"] and not counts["partial"]:
            ctx.sink.message(
                "SFT has nothing to learn from: no sampled trace was graded correct and no row has a reference "
                "response the grader accepts (see the reference message above for what to set)."
                + ctx.state.counters.get("synthesis_grader_note", ""),
                level="warn",
            )
        elif with_ref.tries and not counts["sampled"] and counts["fell_back"]:
            ctx.sink.message(
                f"No sampled trace was graded correct in {with_ref.tries} tries per question: SFT learns from the "
                "reference responses alone (raise openrft.sft.samples_per_question for traces in the model's own "
                "words)." + ctx.state.counters.get("synthesis_grader_note", ""),
                level="warn",
            )
        ctx.mark_done("synthesis")
    return [
        trace_example(ctx.prompt_for(r), results[r.uid].response or "")
        for r in rows
        if r.uid in results and results[r.uid].response
    ]
