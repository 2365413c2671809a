"""Reasoning synthesis by rejection sampling (the paper's SFT data), with the reference-answer fallback.

For each training question the teacher samples traces in rounds until one is graded correct or the
``samples_per_question`` budget is spent; only graded-correct traces are kept. Questions without a correct
trace fall back to the reference response (a worked reasoning plus the reference answer, itself checked by the
grader) when ``fallback_to_reference`` is on, else they are left out of SFT. Progress is saved after every round,
so a pause or a killed worker resumes mid-synthesis.
"""

from __future__ import annotations

import json
import time
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


@dataclass
class Synthesized:
    uid: str
    tries: int = 0
    response: str | None = None
    source: str | None = None
    """"sampled" (a graded-correct trace), "reference" (fallback) or None (dropped)."""
    best_score: float | None = None


def rejection_sample(
    rows: list[Row],
    prompts: list[Messages],
    teacher: Teacher,
    grader: Grader,
    *,
    budget: int,
    temperature: float,
    max_new_tokens: int,
    results: dict[str, Synthesized],
    per_round: int = 1,
    on_round: Any = None,
    min_first_round: int = 20,
) -> dict[str, Synthesized]:
    """Sample until each question has one graded-correct trace or ``budget`` tries; updates ``results``.

    A first round in which not one of at least ``min_first_round`` questions was solved ends the sampling: the
    teacher does not produce what the grader accepts (a reply format it does not know yet), and the remaining
    tries would cost as much for as little."""
    for r in rows:
        results.setdefault(r.uid, Synthesized(uid=r.uid))
    while True:
        tried = [results[r.uid] for r in rows]
        first_round_done = len(tried) >= min_first_round and min(t.tries for t in tried) >= 1
        if first_round_done and not any(t.response for t in tried):
            return results
        todo = [
            i for i, r in enumerate(rows) if results[r.uid].response is None and results[r.uid].tries < budget
        ]
        if not todo:
            return results
        n = min(per_round, budget - min(results[rows[i].uid].tries for i in todo))
        outs = teacher.sample(
            [prompts[i] for i in todo], n=n, temperature=temperature, max_new_tokens=max_new_tokens
        )
        flat = [(i, c) for i, cs in zip(todo, outs, strict=True) for c in cs]
        grades = grader.grade([c for _, c in flat], [rows[i].item for i, _ in flat])
        for (i, text), score in zip(flat, grades.scores, strict=True):
            res = results[rows[i].uid]
            if res.response is not None:
                continue  # first correct trace wins (the paper stops at the first)
            res.best_score = score if res.best_score is None else max(res.best_score, score)
            if grader.correct(score) and text.strip():
                res.response, res.source = text, "sampled"
        for i in todo:
            results[rows[i].uid].tries += n
        if on_round is not None:
            on_round(results)


def synthesize_traces(ctx: RunContext) -> list[dict[str, Any]]:
    """The SFT examples of a reinforcement job (computing, or reloading, synthesis results)."""
    from trainer.stages.references import references

    plan = ctx.plan
    ext = ctx.options
    rows = ctx.train_rows
    refs = references(ctx)
    path = ctx.store.artifact("synthesis.json")
    results: dict[str, Synthesized] = {}
    if path.is_file():
        results = {d["uid"]: Synthesized(**d) for d in json.loads(path.read_text())}

    def save(res: dict[str, Synthesized]) -> None:
        atomic_write_text(path, json.dumps([asdict(r) for r in res.values()]))

    def progress(res: dict[str, Synthesized]) -> None:
        save(res)
        solved = sum(r.response is not None for r in res.values())
        tries = sum(r.tries for r in res.values())
        done_round = max(r.tries for r in res.values())
        head = (
            f"Synthesis round {done_round}/{plan.samples_per_question}: {solved}/{len(res)} questions have a "
            f"graded-correct trace ({solved / max(1, tries):.0%} of {tries} tries)"
        )
        if done_round >= plan.samples_per_question or solved == len(res):
            ctx.sink.message(head + ".")
        elif solved == 0 and len(res) >= 20:
            ctx.sink.message(head + ": no try was correct, so no further round is sampled.", level="warn")
        else:
            ctx.sink.message(head + "; the next round samples only the unsolved ones.")

    if "synthesis" not in ctx.state.done:
        budget = plan.samples_per_question
        prompts = [ctx.prompt_for(r) for r in rows]
        if budget > 0:
            teacher = make_teacher(
                ext.sft.teacher, model=ctx.base_model, tokenizer=ctx.tokenizer, stopper=ctx.stopper
            )
            ctx.sink.message(
                f"Synthesizing reasoning traces: up to {budget} tries per question from {teacher.name} "
                f"(temperature {ext.sft.temperature}, max {plan.max_completion_length} new tokens)."
            )
            t0 = time.perf_counter()
            rejection_sample(
                rows,
                prompts,
                teacher,
                ctx.need_grader(),
                budget=budget,
                temperature=ext.sft.temperature,
                max_new_tokens=plan.max_completion_length,
                results=results,
                on_round=progress,
            )
            ctx.state.counters["synthesis_s"] = time.perf_counter() - t0
        for r in rows:
            res = results.setdefault(r.uid, Synthesized(uid=r.uid))
            if res.response is None and ext.sft.fallback_to_reference and refs.get(r.uid):
                res.response, res.source = refs[r.uid], "reference"
        save(results)
        counts = {
            "sampled": sum(r.source == "sampled" for r in results.values()),
            "fell_back": sum(r.source == "reference" for r in results.values()),
            "dropped": sum(r.source is None for r in results.values()),
        }
        ctx.state.counters["synthesis"] = counts
        ctx.sink.metrics(
            f"Synthesis: {counts['sampled']}/{len(rows)} questions have a graded-correct sampled trace, "
            f"{counts['fell_back']} fell back to the reference answer, {counts['dropped']} left out of SFT.",
            {"step": 0, "stage": "synthesis", "synthesis": counts, "samples_per_question": budget},
        )
        if not counts["sampled"] and not counts["fell_back"]:
            ctx.sink.message(
                "SFT has nothing to learn from: no sampled trace was graded correct and no row has a reference "
                "response the grader accepts (see the reference message above for what to set).",
                level="warn",
            )
        elif budget and not counts["sampled"]:
            ctx.sink.message(
                f"No sampled trace was graded correct in {budget} tries per question: SFT learns from the reference "
                "responses alone (raise openrft.sft.samples_per_question for traces in the model's own words).",
                level="warn",
            )
        ctx.mark_done("synthesis")
    return [
        trace_example(ctx.prompt_for(r), results[r.uid].response or "")
        for r in rows
        if r.uid in results and results[r.uid].response
    ]
