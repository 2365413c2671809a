"""The RL stage, the same for every algorithm (trainer/algorithms): resume, the step loop with the RL watch
(warn, end early, or fail), and the plan shrunk to the steps that ran when it ends early."""

from __future__ import annotations

from trainer.algorithms import get
from trainer.data import Row
from trainer.stages.context import RunContext
from trainer.stages.steps import StageCallback


def train_rl(ctx: RunContext, rows: list[Row], *, offset: int) -> None:
    from trainer.watch import RLWatch

    algorithm = get(ctx.options.rl.algorithm)
    resume = ctx.begin_stage("rl")
    model = ctx.policy_for_rl()
    opts = ctx.options.rl
    cb = StageCallback(ctx, "rl", offset=offset, eval_every=ctx.plan.eval_interval, rank_by_loss=False)
    never = 10**9
    cb.watch = RLWatch(
        flat_patience=3 if opts.early_stop else never,
        eval_patience=(opts.patience if opts.early_stop else 0) or never,
    )
    trainer = algorithm.build(ctx, model, rows, cb)
    ctx.sink.message(
        algorithm.describe(ctx)
        + (f" (resuming at step {offset + ctx.state.trainer_step['rl']})" if resume else "")
    )
    ctx.train(trainer, model, resume)
    if cb.stop_now:  # ended early: the plan shrinks to the steps that ran
        ctx.shrink_plan(ctx.state.global_step, "RL ended early")
    ctx.mark_done("rl")


def choose_rl_start(ctx: RunContext) -> str:
    """After SFT: RL starts from the SFT adapter, unless SFT left validation below the base model's (the mean
    reward of both on the same rows), where it starts from the base: a model that imitated bare answers may have
    lost what the base could do, and RL needs the base's successes to learn from. Kept in the run state; an
    event gives both numbers."""
    saved = ctx.state.counters.get("rl_start")
    if saved is not None:
        return str(saved["start"])
    from trainer.selection import paired_difference

    sft_step = ctx.state.stage_offsets.get("rl", 0)
    base = ctx.state.valid_scores.get("0")
    sft = ctx.state.valid_scores.get(str(sft_step)) if sft_step else None
    decision: dict[str, object] = {"start": "sft" if "sft" in ctx.state.done and sft_step else "base"}
    for name, scores in (("base", base), ("sft", sft)):
        if scores:  # the start's validation reward: what RL's evaluations must beat (StageCallback)
            decision[name] = sum(scores) / len(scores)
    if base is not None and sft is not None and len(base) == len(sft):
        diff = paired_difference(base, sft)
        b, f = sum(base) / len(base), sum(sft) / len(sft)
        decision = {
            "start": "base" if f < b - 1e-9 else "sft",
            "base": b,
            "sft": f,
            "sft_minus_base": diff.mean,
        }
        if decision["start"] == "base":
            ctx.sink.message(
                f"RL starts from the base model, not from SFT: SFT lowered validation's mean reward from {b:.3f} to "
                f"{f:.3f} (paired difference {diff.describe()} over {diff.n} rows). RL learns from what the base "
                "model already gets right.",
                level="warn",
            )
        else:
            ctx.sink.message(
                f"RL starts from the SFT model: validation's mean reward {b:.3f} before training, {f:.3f} after SFT "
                f"(paired difference {diff.describe()} over {diff.n} rows)."
            )
    ctx.state.counters["rl_start"] = decision
    ctx.save_state()
    return str(decision["start"])


def start_plan(ctx: RunContext) -> None:
    """The plan's learning rate for where RL starts: gentler when it continues the SFT adapter (applied on every
    rank and again on a resume, from the decision kept in the run state)."""
    if ctx.rl_start() == "sft":
        ctx.narrow_plan(rl_learning_rate=ctx.plan.rl_learning_rate_from_sft)
