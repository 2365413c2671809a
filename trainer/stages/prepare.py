"""Before any stage: the rows, the checkpoint-selection split, the resolved plan, the models and the grader;
then the few-shot example bank and the one-off duration estimate."""

from __future__ import annotations

import json
import os
import time
from dataclasses import fields
from importlib.util import find_spec
from typing import Any

from trainer.config import Hardware, RunPlan, plan_run, redact_secrets
from trainer.data import Row, hold_out, load_rows
from trainer.distributed import barrier
from trainer.prompts import longest_prompt_tokens
from trainer.stages.context import Books, RunContext


def prepare(books: Books) -> RunContext:
    """Load what the stages need; every ``auto`` option is resolved here, once, into ``ctx.plan``."""
    import torch

    spec, opts = books.spec, books.options
    train_rows = load_rows(spec.training_file, method=spec.method, param="training_file")
    val_rows: list[Row] = []
    if spec.validation_file is not None:
        val_rows = load_rows(spec.validation_file, method=spec.method, param="validation_file")
        if opts.eval.max_samples:
            val_rows = val_rows[: opts.eval.max_samples]
    if spec.method == "reinforcement":  # the final model is chosen on validation, RL or not
        train_rows, val_rows = _hold_out(books, train_rows, val_rows)
    gpu = torch.cuda.is_available()
    plan = plan_run(
        books.cfg,
        n_train=len(train_rows),
        hardware=Hardware(gpu=gpu, cpu_count=os.cpu_count() or 1),
        vllm_available=find_spec("vllm") is not None,
    )
    from trainer.models import load_model, load_tokenizer, resolve_model_dir

    # A GGUF base is converted once per machine: the first rank there converts, the others then read the cache.
    world = books.world
    model_dir = (
        resolve_model_dir(spec.model_source, cache_dir=spec.cache_dir) if world.local_rank == 0 else ""
    )
    barrier(world)
    if world.local_rank != 0:
        model_dir = resolve_model_dir(spec.model_source, cache_dir=spec.cache_dir)
    tokenizer = load_tokenizer(model_dir)
    longest = longest_prompt_tokens(tokenizer, train_rows, system_prompt=opts.system_prompt)
    memory = _check_memory(books, model_dir, plan, longest)
    torch.manual_seed(spec.seed)
    base_model = load_model(model_dir)
    grader = None
    if spec.method == "reinforcement":
        from trainer.grading import Grader

        if spec.grader:
            grader = Grader(
                spec.grader,
                spec.grader_settings,
                pass_threshold=opts.eval.pass_threshold,
                stopper=books.stopper,
            )
            grader.__enter__()
    ctx = RunContext(
        **{f.name: getattr(books, f.name) for f in fields(Books)},
        plan=plan,
        gpu=gpu,
        model_dir=model_dir,
        tokenizer=tokenizer,
        base_model=base_model,
        grader=grader,
        train_rows=train_rows,
        val_rows=val_rows,
    )
    if spec.method == "reinforcement":
        ctx.need_grader()
    if not books.state.resumes:
        books.sink.message(
            f"Training {spec.method} job on {spec.base_model} ({'GPU' if gpu else 'CPU'}): "
            f"{len(train_rows)} training rows, {len(val_rows)} validation rows. "
            f"Settings: {json.dumps(redact_secrets(plan.as_dict()))}. Memory: {memory.describe()}"
        )
    return ctx


def _check_memory(books: Books, model_dir: str, plan: RunPlan, prompt_tokens: int) -> Any:
    """Refuse, before the weights are loaded, a job whose estimated memory does not fit this worker's devices
    (trainer.memory: the numbers and what would fit are in the error)."""
    from transformers import AutoConfig

    from trainer.device import detect
    from trainer.distributed import on_main
    from trainer.memory import refuse_if_too_big
    from trainer.models import prm_config

    opts = books.options
    config = AutoConfig.from_pretrained(model_dir)
    prm = prm_config(opts, cache_dir=books.spec.cache_dir)
    world = books.world
    return on_main(
        lambda: refuse_if_too_big(
            config,
            plan,
            opts,
            world_size=world.world_size,
            device=detect(),
            prompt_tokens=prompt_tokens,
            prm_config=prm,
        ),
        world=world,
    )


def _hold_out(books: Books, train: list[Row], val: list[Row]) -> tuple[list[Row], list[Row]]:
    """Move training rows to the checkpoint-selection set when the validation file is small (see
    ``eval.holdout``): choosing between the SFT and RL checkpoints on 20 rows is mostly noise."""
    want = books.options.eval.holdout
    n_val, n_train = len(val), len(train)
    k = int(want) if want != "auto" else (min(40 - n_val, n_train // 5) if n_val < 40 else 0)
    train, held = hold_out(train, k, seed=books.spec.seed)
    if held and not books.state.resumes:
        books.sink.message(
            f"Checkpoint choice: {len(held)} training rows are held out of training and join the "
            f"{n_val} validation rows ({n_val + len(held)} in all; set openrft.eval.holdout to change)."
        )
    return train, val + held


def setup_icl(ctx: RunContext) -> None:
    """The few-shot example bank (``icl_k`` nearest worked examples in every prompt), built once."""
    k = ctx.options.icl_k
    if k <= 0 or ctx.icl is not None:
        return
    from trainer.icl import Embedder, ExampleBank
    from trainer.stages.references import references

    ctx.icl = ExampleBank(ctx.train_rows, references(ctx), k=k, embedder=Embedder())
    ctx.icl.precompute(ctx.train_rows + ctx.val_rows)
    ctx.sink.message(f"Few-shot ICL: {k} nearest of {len(ctx.icl.rows)} worked examples in every prompt.")


def announce_estimate(
    ctx: RunContext, *, sft_examples: int, synthesis_questions: int, searched_questions: int = 0
) -> None:
    """Once per job: time a calibration step and report the estimated duration (a resumed run re-estimates
    from the saved one as it goes)."""
    from trainer.estimate import Remaining, calibrate, estimate_seconds

    if "estimate" in ctx.state.done:
        saved = ctx.state.counters.get("estimate_s")
        if isinstance(saved, dict):
            ctx.remaining = Remaining(saved, time.monotonic(), done_at_start=frozenset(ctx.finished_parts()))
        return
    plan = ctx.plan
    prompt = ctx.prompt_for(ctx.train_rows[0])
    if not ctx.reinforcement:
        prompt = prompt[:-1] if prompt and prompt[-1].get("role") == "assistant" else prompt
    batch = plan.rl_batch_size * plan.num_generations if plan.rl_enabled else plan.sft_batch_size
    cal = calibrate(
        ctx.base_model,
        ctx.tokenizer,
        prompt,
        batch=max(1, batch),
        new_tokens=min(32, plan.max_completion_length),
    )
    parts = estimate_seconds(
        plan,
        cal,
        n_val=len(ctx.val_rows),
        sft_examples=sft_examples,
        synthesis_questions=synthesis_questions,
        searched_questions=searched_questions,
        prm_factor=2.0 if ctx.options.prm.type == "self" else 0.0,
        trained_tokens=_reference_tokens(ctx),
        probe_prompts=ctx.options.rl.probe_prompts if ctx.reinforcement else 0,
        baseline=ctx.options.eval.at_start,
        **_augmentation_load(ctx, plan),
    )
    total = sum(parts.values())
    ctx.state.counters["estimate_s"] = parts
    shown = ", ".join(f"{k} {v / 60:.1f}" for k, v in parts.items() if v)
    ctx.sink.message(
        f"Estimated duration: {total / 60:.1f} min ({shown} min; calibration: {cal.gen_tokens_per_s:.0f} "
        f"generated tokens/s, {cal.train_s_per_seq:.2f} s per trained sequence)."
    )
    ctx.remaining = Remaining(parts, time.monotonic(), done_at_start=frozenset(ctx.finished_parts()))
    ctx.reporter.estimate(seconds_left=total, step=ctx.state.global_step)
    ctx.mark_done("estimate")


def _reference_tokens(ctx: RunContext) -> float | None:
    """Mean length in tokens of the responses SFT will train on (the reference responses), or None."""
    if not ctx.reinforcement:
        return None
    from trainer.stages.references import references

    texts = [t for t in references(ctx).values() if t]
    if not texts:
        return None
    return sum(len(ctx.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts)


def _augmentation_load(ctx: RunContext, plan: RunPlan) -> dict[str, int]:
    """What question augmentation will ask of a teacher (paraphrases are sampled only for RL rows)."""
    aug = ctx.options.augmentation
    if not ctx.reinforcement or not (aug.enabled and aug.paraphrase and plan.rl_enabled):
        return {}
    return {"augmentation_questions": len(ctx.train_rows), "augmentation_tokens": aug.max_new_tokens}
