"""GRPO (TRL's GRPOTrainer) with LoRA: reward = the job's grader (+ alpha x process reward), a group of
``num_generations`` rollouts per prompt, rollouts by transformers or vLLM (colocated or a server)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.data import Row
    from trainer.stages.context import RunContext
    from trainer.stages.steps import StageCallback


class GRPO:
    name = "grpo"

    def build(self, ctx: RunContext, model: Any, rows: list[Row], callback: StageCallback) -> Any:
        from datasets import Dataset

        from trainer.curriculum import PromptStats
        from trainer.prm import make_process_reward
        from trainer.rl import (
            GraderReward,
            PolicyVersions,
            StatsBox,
            grpo_args,
            make_grpo_trainer,
            vllm_kwargs,
        )

        plan, opts = ctx.plan, ctx.options.rl
        box, versions = StatsBox(), PolicyVersions()
        prm = make_process_reward(ctx)
        # Every rank must draw the same prompts, and each sees only its share of the groups: one process only.
        curriculum = PromptStats() if opts.dynamic_sampling and not ctx.world.distributed else None
        reward = GraderReward(
            ctx.need_grader(),
            box,
            num_generations=plan.num_generations,
            prm=prm,
            alpha=ctx.options.prm.alpha if prm is not None else 1.0,
            curriculum=curriculum,
        )
        data = Dataset.from_list(
            [{"prompt": ctx.prompt_for(r), "item_json": json.dumps(r.item), "uid": r.uid} for r in rows]
        )
        vllm = None
        if plan.rollout_engine == "vllm":
            vllm = vllm_kwargs(
                mode=plan.vllm_mode,
                server_base_url=opts.vllm_server_base_url,
                group_port=opts.vllm_group_port,
                gpu_memory_utilization=opts.vllm_gpu_memory_utilization,
                max_model_length=None,
            )
        args = grpo_args(
            output_dir=str(ctx.workdir / "hf" / "rl"),
            batch_size=plan.rl_batch_size,
            num_generations=plan.num_generations,
            learning_rate=plan.rl_learning_rate,
            max_steps=plan.rl_max_steps,
            max_completion_length=plan.max_completion_length,
            temperature=plan.rl_temperature,
            beta=opts.beta,
            loss_type=opts.loss_type,
            seed=ctx.spec.seed,
            use_cpu=not ctx.gpu,
            vllm=vllm,
            model_config=model.config,
            **ctx.training_world(),
        )
        callback.stats_box, callback.versions = box, versions
        return make_grpo_trainer(
            model=model,
            reward_funcs=[reward],
            args=args,
            train_dataset=data,
            processing_class=ctx.tokenizer,
            callbacks=[callback],
            stats_box=box,
            policy_versions=versions,
            curriculum=curriculum,
        )

    def describe(self, ctx: RunContext) -> str:
        plan, opts = ctx.plan, ctx.options.rl
        prm = ctx.options.prm.type
        ends = []
        if opts.early_stop and opts.patience:
            ends.append(f"{opts.patience} evaluations (every {plan.eval_interval} steps) without a new best")
        if plan.rl_time_budget_s:
            ends.append(f"{plan.rl_time_budget_s / 60:.0f} minutes")
        return (
            f"RL (GRPO): up to {plan.rl_max_steps} steps, {plan.rl_batch_size} prompts x {plan.num_generations} "
            f"rollouts per step at temperature {plan.rl_temperature:g}, max {plan.max_completion_length} new "
            f"tokens, lr {plan.rl_learning_rate:g}, rollouts by {plan.rollout_engine}"
            + (f", process reward: {prm}" if prm != "none" else "")
            + (f"; it goes on while validation improves and ends after {' or '.join(ends)}" if ends else "")
        )


ALGORITHM = GRPO()
