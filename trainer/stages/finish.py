"""The end of a run: the final model (a copy of the best checkpoint, merged on request) with the comparison
against the base model; or, when stopped, what a cancel keeps and the snapshot a pause leaves."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trainer.checkpoints import atomic_dir
from trainer.control import StopRequested
from trainer.interface import JobResult, TrainerError
from trainer.selection import Candidate, Choice, choose, paired_difference
from trainer.stages.context import Books, RunContext


def finish(ctx: RunContext) -> JobResult:
    if not ctx.world.is_main:  # rank 0 writes the final model and reports; no collective follows
        return JobResult(status="succeeded", checkpoints=list(ctx.ckpts.kept))
    final = ctx.workdir / "final" / "adapter"
    choice = final_choice(ctx)
    best = ctx.ckpts.best()
    if choice is not None and choice.chosen.stage != "base":
        best = ctx.ckpts.at(choice.chosen.step) or best
    if choice is not None and choice.chosen.stage == "base":
        # Nothing beat the base model on validation: the model is the base (a zero LoRA update, served as such).
        atomic_dir(final, lambda tmp: _identity_adapter(ctx).save_pretrained(str(tmp)))
        ctx.sink.message("Final model: the base model (a zero adapter); no checkpoint beat it on validation.")
    elif best is not None:
        atomic_dir(final, lambda tmp: shutil.copytree(best.path, tmp, dirs_exist_ok=True))
        ctx.sink.message(f"Final model: checkpoint of step {best.step} ({_describe(best.metrics)}).")
    elif ctx.policy_model is not None:
        atomic_dir(final, lambda tmp: ctx.policy_model.save_pretrained(str(tmp)))
    else:
        raise TrainerError("Nothing was trained.", code="training_error")
    if choice is not None:
        summarize(ctx, choice)
    if not (final / "tokenizer_config.json").exists():
        ctx.tokenizer.save_pretrained(str(final))
    model_dir = _merge(ctx, final) if ctx.options.merge_weights else final
    csv_path = ctx.reporter.write_csv()
    ctx.state.stage = "done"
    ctx.save_state()
    tokens = sum(int(v) for k, v in ctx.state.counters.items() if k.endswith("_tokens"))
    return JobResult(
        status="succeeded",
        model_dir=model_dir,
        result_file=csv_path,
        rollouts_file=ctx.rollouts.file(),
        trained_tokens=tokens,
        checkpoints=list(ctx.ckpts.kept),
    )


def candidates(ctx: RunContext) -> list[Candidate]:
    """The evaluated models a reinforcement job may keep, in training order: the base (step 0), the end of SFT
    and RL's kept checkpoints, each with its per-row validation grades."""
    sft_end = ctx.state.stage_offsets.get("rl", 0) if "sft" in ctx.state.done else 0
    out = []
    for key, scores in sorted(ctx.state.valid_scores.items(), key=lambda kv: int(kv[0])):
        step = int(key)
        if step == 0:
            out.append(Candidate(0, "base", scores))
        elif ctx.ckpts.at(step) is not None:
            out.append(Candidate(step, "sft" if step <= sft_end else "rl", scores))
    return out


def final_choice(ctx: RunContext) -> Choice | None:
    """The paired choice of the final model (trainer.selection), or None where there is nothing to compare
    (supervised jobs, no validation rows): then the best checkpoint is the model, as ranked while training."""
    if not ctx.reinforcement:
        return None
    found = candidates(ctx)
    if not found or all(c.stage == "base" for c in found):
        return None
    return choose(found)


def summarize(ctx: RunContext, choice: Choice) -> None:
    """One event: what each stage changed on validation (paired, same rows) and which model the job keeps."""
    by_stage: dict[str, Candidate] = {}
    for c in candidates(ctx):  # the best of each stage, as choose() compared them
        if c.stage not in by_stage or c.mean > by_stage[c.stage].mean + 1e-12:
            by_stage[c.stage] = c
    data: dict[str, Any] = {
        "step": ctx.state.global_step,
        "stage": "summary",
        "valid_rows": len(choice.chosen.scores),
        "chosen_step": choice.chosen.step,
        "chosen_stage": choice.chosen.stage,
    }
    parts = []
    for name, c in by_stage.items():
        data[f"{name}_valid_mean_reward"] = round(c.mean, 4)
        parts.append(f"{_STAGE_NAMES[name]} {c.mean:.3f}" + (f" (step {c.step})" if name == "rl" else ""))
    added = []
    rl_from = ctx.rl_start()  # RL's gain is over the model it started from
    for earlier, later in (("base", "sft"), ("sft", "rl"), ("base", "rl")):
        a, b = by_stage.get(earlier), by_stage.get(later)
        if a is None or b is None or len(a.scores) != len(b.scores):
            continue
        diff = paired_difference(a.scores, b.scores)
        data[f"{later}_minus_{earlier}"] = {"mean": diff.mean, "low": diff.low, "high": diff.high}
        if later == "sft" or earlier == rl_from:
            start = " (its start)" if later == "rl" else ""
            added.append(f"{_STAGE_NAMES[later]} over {_STAGE_NAMES[earlier]}{start} {diff.describe()}")
    if "rl" in by_stage:
        data["rl_start"] = rl_from
    chosen = choice.chosen
    kept = (
        "the base model: nothing trained here beat it on these rows by more than their noise, so the fine-tuned "
        "model answers as the base does (more rows, worked solutions in the rows or a larger base model are the "
        "levers)"
        if chosen.stage == "base"
        else f"the {_STAGE_NAMES[chosen.stage]} model of step {chosen.step}"
    )
    ctx.state.counters["summary"] = data
    ctx.sink.metrics(
        f"What training changed on validation ({len(chosen.scores)} rows, mean reward): {', '.join(parts)}; "
        f"paired differences with 95% intervals: {'; '.join(added) or 'none'}. The final model is {kept}.",
        data,
    )
    if chosen.stage == "base":
        ctx.sink.message(
            "Training did not improve on the base model on validation: the final model is the base model.",
            level="warn",
        )


_STAGE_NAMES = {"base": "base", "sft": "SFT", "rl": "RL"}


def _identity_adapter(ctx: RunContext) -> Any:
    """A LoRA adapter whose update is zero (PEFT starts B at 0): the base model, in the form served models take."""
    from trainer.lora import attach_adapter
    from trainer.models import load_model

    opts = ctx.options
    return attach_adapter(
        load_model(ctx.model_dir), rank=opts.lora_rank, alpha=ctx.plan.lora_alpha, dropout=opts.lora_dropout
    )


def _merge(ctx: RunContext, adapter_dir: Path) -> Path:
    from peft import PeftModel

    from trainer.lora import merge_and_save
    from trainer.models import load_model

    peft = PeftModel.from_pretrained(load_model(ctx.model_dir), str(adapter_dir))
    out = ctx.workdir / "final" / "merged"
    atomic_dir(out, lambda tmp: merge_and_save(peft, ctx.tokenizer, tmp))
    ctx.sink.message("Merged the adapter into full weights.")
    return out


def _describe(metrics: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)]
    return ", ".join(parts) or "no metrics"


def stopped(books: Books, stop: StopRequested, *, stage: str | None, hf_trainer: Any) -> JobResult:
    """A cancel keeps the results so far; a pause also saves the stage's HF trainer and the run state."""
    state = books.state
    if stop.kind == "cancel":
        books.sink.message(f"Cancelled at step {state.global_step}; nothing more is written.")
        return JobResult(
            status="cancelled", result_file=books.reporter.write_csv(), checkpoints=list(books.ckpts.kept)
        )
    if hf_trainer is not None and stage is not None:
        books.store.save_trainer(hf_trainer)
        state.trainer_step[stage] = int(hf_trainer.state.global_step)
    books.save_state()
    where = state.trainer_step.get(stage or "", None)
    at = (state.stage_offsets.get(stage or "", 0) + where) if where is not None else state.global_step
    books.sink.message(f"Paused at step {at} ({stop.reason}); a resumable snapshot is saved.", level="info")
    return JobResult(
        status="paused",
        snapshot_dir=books.store.root,
        result_file=books.reporter.write_csv(),
        checkpoints=list(books.ckpts.kept),
    )
