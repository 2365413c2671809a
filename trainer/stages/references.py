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
    hint = (
        ""
        if ok
        else " Without them a question no sampled trace solves is left out of SFT, and few-shot examples "
        "are empty. Set openrft.reference to the template of a row's answer (e.g. '{{ item.answer }}') and, "
        "if the grader wants more than the bare answer, openrft.response_template (e.g. 'Answer: {answer}')."
    )
    ctx.sink.message(f"Reference responses: {refs.summary()}{hint}", level="info" if ok else "warn")
    return ctx.refs
