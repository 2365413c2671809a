"""The validation evaluation: accuracy and mean reward of a model on the checkpoint-selection rows, with the
job's prompts and eval protocol."""

from __future__ import annotations

from typing import Any

from trainer.stages.context import RunContext


def validate(ctx: RunContext, model: Any) -> dict[str, Any]:
    """The metrics of ``model`` on ``ctx.val_rows`` (the ``full_valid_*`` columns of the results file)."""
    from trainer.evaluation import evaluate
    from trainer.watch import wilson_interval

    plan = ctx.plan
    res = evaluate(
        model,
        ctx.tokenizer,
        [ctx.prompt_for(r) for r in ctx.val_rows],
        [r.item for r in ctx.val_rows],
        ctx.need_grader(),
        samples=plan.eval_samples,
        temperature=plan.eval_temperature,
        max_new_tokens=plan.max_completion_length,
        stopper=ctx.stopper,
    )
    ctx.check_grader_errors(res.grader_errors, res.n_samples, "the validation evaluation")
    out: dict[str, Any] = {
        "full_valid_mean_reward": res.mean_reward,
        "full_valid_accuracy": res.accuracy,
        # Over questions, not samples: a question's samples are not independent draws of the model.
        "full_valid_accuracy_ci": list(wilson_interval(res.accuracy * res.n_questions, res.n_questions)),
        "valid_completion_tokens_mean": res.completion_tokens_mean,
    }
    if res.grader_errors:
        out["grader_error_counts"] = res.grader_errors
    return out
