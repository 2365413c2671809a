"""The SFT stage: LoRA SFT on conversations (supervised jobs) or on the synthesized reasoning traces (the
reinforcement warm-up, whose adapter RL starts from)."""

from __future__ import annotations

from typing import Any

from trainer.stages.context import RunContext
from trainer.stages.steps import StageCallback


def train_sft(
    ctx: RunContext,
    examples: list[dict[str, Any]],
    eval_examples: list[dict[str, Any]] | None,
    *,
    offset: int,
    eval_every: int | None,
    rank_by_loss: bool,
) -> None:
    from trainer.sft import make_sft_trainer

    plan = ctx.plan
    if not examples:
        ctx.sink.message("SFT skipped: no training examples.", level="warn")
        ctx.mark_done("sft")
        return
    resume = ctx.begin_stage("sft")
    model = ctx.policy()
    cb = StageCallback(ctx, "sft", offset=offset, eval_every=eval_every, rank_by_loss=rank_by_loss)
    trainer = make_sft_trainer(
        model=model,
        tokenizer=ctx.tokenizer,
        examples=examples,
        eval_examples=eval_examples,
        output_dir=str(ctx.workdir / "hf" / "sft"),
        batch_size=plan.sft_batch_size,
        epochs=plan.sft_epochs,
        learning_rate=plan.sft_learning_rate,
        max_length=ctx.options.sft.max_length,
        seed=ctx.spec.seed,
        use_cpu=not ctx.gpu,
        callbacks=[cb],
        **ctx.training_world(),
    )
    ctx.sink.message(
        f"SFT: {len(examples)} examples, {plan.sft_epochs} epochs, batch {plan.sft_batch_size}, "
        f"lr {plan.sft_learning_rate:g}"
        + (f" (resuming at step {ctx.state.trainer_step['sft']})" if resume else "")
    )
    ctx.train(trainer, model, resume)
    if ctx.reinforcement:
        from trainer.checkpoints import atomic_dir
        from trainer.distributed import barrier, shards_weights

        adapter = ctx.store.artifact("sft_adapter")
        if shards_weights(ctx.options.distributed.strategy, ctx.world):
            # ZeRO-3 / FSDP: HF's save gathers the adapter's shards, which every rank must take part in.
            atomic_dir(adapter, lambda d: trainer.save_model(str(d)), every_rank=True)
        else:  # the ranks hold the same weights after DDP; one copy is kept
            atomic_dir(adapter, lambda d: ctx.policy_model.save_pretrained(str(d)))
        barrier(ctx.world)
        # The end of SFT stays a candidate for the final model whatever RL's checkpoints score (trainer.selection).
        ctx.ckpts.pin(ctx.state.global_step)
        # RL loads a fresh base model with this adapter (RunContext.policy_for_rl): free the engine SFT's
        # trainer built around its module (DeepSpeed / FSDP keep hooks on it) and the module itself.
        trainer.accelerator.free_memory()
        ctx.release_policy()
    ctx.mark_done("sft")
