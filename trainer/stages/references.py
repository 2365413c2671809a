"""The graded-correct reference response of every training row: the fallback trace of synthesis, the answer of
a few-shot example, and the length SFT is priced at. Found once (trainer.references) and kept in the run's
artifacts, so a resumed run neither recomputes nor re-grades them."""

from __future__ import annotations

import json

from trainer.checkpoints import atomic_write_text
from trainer.data import question
from trainer.stages.context import RunContext


def references(ctx: RunContext) -> dict[str, str | None]:
    """Row uid -> reference response (None where no reference the grader accepts was found); cached."""
    if ctx.refs is not None:
        return ctx.refs
    path = ctx.store.artifact("references.json")
    if path.is_file():
        ctx.refs = json.loads(path.read_text())
        return ctx.refs
    from trainer.references import reference_responses

    grader, opts = ctx.need_grader(), ctx.options
    before = grader.error_totals.copy()
    refs = reference_responses(
        ctx.train_rows,
        grader,
        grader_spec=grader.spec,
        reference=opts.reference,
        template=opts.response_template,
        # The task's instructions decide the form tried first: the system prompt and the question itself.
        instruction=(opts.system_prompt or "") + "\n" + question(ctx.train_rows[0]),
    )
    ctx.refs = {r.uid: text for r, text in zip(ctx.train_rows, refs.responses, strict=True)}
    atomic_write_text(path, json.dumps(ctx.refs))
    ctx.state.counters["references"] = {"by_source": refs.by_source, "by_template": refs.by_template}
    ok = any(refs.responses)
    hint = "" if ok else _missing_hint(opts.reference) + grader.failures_since(before)
    ctx.sink.message(f"Reference responses: {refs.summary()}{hint}", level="info" if ok else "warn")
    return ctx.refs


def _missing_hint(reference: str | None) -> str:
    """What to do when no row has a reference the grader accepts: what to set, or, when openrft.reference is
    set already, what to check about it."""
    why = " Without them a question no sampled trace solves is left out of SFT, and few-shot examples are empty."
    if reference:
        return (
            f"{why} openrft.reference is set ({reference!r}), but the grader scored none of the answers it gives "
            "as correct: check what the grader gives a row's answer with POST /v1/fine_tuning/alpha/graders/run "
            "(model_sample: the answer, item: the row), and if the grader wants more than the bare answer, set "
            "openrft.response_template (e.g. 'Answer: {answer}')."
        )
    return (
        f"{why} Set openrft.reference to the template of a row's answer (e.g. '{{{{ item.answer }}}}') and, "
        "if the grader wants more than the bare answer, openrft.response_template (e.g. 'Answer: {answer}')."
    )
