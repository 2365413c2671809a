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
    model = ctx.policy_after_sft()
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
