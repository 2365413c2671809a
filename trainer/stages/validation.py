"""The validation evaluation: accuracy and mean reward of a model on the checkpoint-selection rows, with the
job's prompts and eval protocol."""

from __future__ import annotations

from typing import Any

from trainer.stages.context import RunContext


def validate(ctx: RunContext, model: Any) -> dict[str, Any]:
    """The metrics of ``model`` on ``ctx.val_rows`` (the ``full_valid_*`` columns of the results file).

    A collective under a launch: every rank calls it at the same point."""
    from trainer.distributed import all_gather, shard
    from trainer.evaluation import EvalResult, combine, evaluate
    from trainer.watch import wilson_interval

    plan = ctx.plan
    # Under a launch every rank evaluates its share of the rows and all get the whole result, so every rank
    # takes the same decisions from it (checkpoint choice, the RL watch, a failing grader).
    rows = shard(ctx.val_rows, ctx.world)
    res = (
        EvalResult(0.0, 0.0, 0, 0, 0.0, 0.0)
        if not rows
        else evaluate(
            model,
            ctx.tokenizer,
            [ctx.prompt_for(r) for r in rows],
            [r.item for r in rows],
            ctx.need_grader(),
            samples=plan.eval_samples,
            temperature=plan.eval_temperature,
            max_new_tokens=plan.max_completion_length,
            stopper=ctx.stopper,
        )
    )
    if ctx.world.distributed:
        res = combine(all_gather(res, ctx.world))
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
