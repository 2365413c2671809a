"""The validation evaluation: accuracy and mean reward of a model on the checkpoint-selection rows, with the
job's prompts and eval protocol; and :func:`evaluate_rows`, the collective evaluation it and the RL probe use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainer.data import Row
from trainer.stages.context import RunContext

if TYPE_CHECKING:
    from trainer.evaluation import EvalResult


def evaluate_rows(
    ctx: RunContext, model: Any, rows: list[Row], *, samples: int, temperature: float
) -> EvalResult:
    """``samples`` graded completions of ``model`` per row, with the job's prompts.

    A collective under a launch: every rank calls it at the same point, evaluates its share of the rows and gets
    the whole result, so every rank takes the same decisions from it (checkpoint choice, the RL watch and probe,
    a failing grader). With sharded weights (ZeRO-3, FSDP) the shares are padded to one length and generation
    runs in step on all ranks."""
    from trainer.distributed import all_gather, padded_shard, shards_weights
    from trainer.evaluation import EvalResult, combine, evaluate

    lockstep = shards_weights(ctx.options.distributed.strategy, ctx.world)
    mine, pads = padded_shard(rows, ctx.world)
    if not lockstep:
        pads = []
    res = (
        EvalResult(0.0, 0.0, 0, 0, 0.0, 0.0)
        if not mine and not pads
        else evaluate(
            model,
            ctx.tokenizer,
            [ctx.prompt_for(r) for r in mine],
            [r.item for r in mine],
            ctx.need_grader(),
            samples=samples,
            temperature=temperature,
            max_new_tokens=ctx.plan.max_completion_length,
            stopper=ctx.stopper,
            padding=[ctx.prompt_for(r) for r in pads],
            synced_gpus=lockstep,
        )
    )
    return combine(all_gather(res, ctx.world)) if ctx.world.distributed else res


def validate(ctx: RunContext, model: Any, *, step: int | None = None) -> dict[str, Any]:
    """The metrics of ``model`` on ``ctx.val_rows`` (the ``full_valid_*`` columns of the results file); a
    collective under a launch (:func:`evaluate_rows`). With ``step``, the per-row grades are kept in the run
    state for the paired comparisons that choose the final model (trainer.selection)."""
    from trainer.watch import wilson_interval

    plan = ctx.plan
    res = evaluate_rows(
        ctx, model, ctx.val_rows, samples=plan.eval_samples, temperature=plan.eval_temperature
    )
    ctx.check_grader_errors(res.grader_errors, res.n_samples, "the validation evaluation")
    if step is not None:
        ctx.state.valid_scores[str(step)] = [round(q, 6) for q in res.per_question]
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
