"""The end of a run: the final model (a copy of the best checkpoint, merged on request) with the comparison
against the base model; or, when stopped, what a cancel keeps and the snapshot a pause leaves."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trainer.checkpoints import atomic_dir
from trainer.control import StopRequested
from trainer.interface import EventSink, JobResult, TrainerError
from trainer.stages.context import Books, RunContext


def finish(ctx: RunContext) -> JobResult:
    if not ctx.world.is_main:  # rank 0 writes the final model and reports; no collective follows
        return JobResult(status="succeeded", checkpoints=list(ctx.ckpts.kept))
    best = ctx.ckpts.best()
    final = ctx.workdir / "final" / "adapter"
    if best is not None:
        atomic_dir(final, lambda tmp: shutil.copytree(best.path, tmp, dirs_exist_ok=True))
        ctx.sink.message(f"Final model: checkpoint of step {best.step} ({_describe(best.metrics)}).")
        compare_with_base(ctx.sink, ctx.reporter.rows, best.metrics)
    elif ctx.policy_model is not None:
        atomic_dir(final, lambda tmp: ctx.policy_model.save_pretrained(str(tmp)))
    else:
        raise TrainerError("Nothing was trained.", code="training_error")
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


def compare_with_base(sink: EventSink, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    """Say so when the fine-tuned model is no better than the base model on validation (step 0)."""
    base = next((r for r in rows if r.get("stage") == "baseline"), None)
    tuned = metrics.get("full_valid_mean_reward")
    if base is None or base.get("full_valid_mean_reward") in (None, "") or tuned is None:
        return
    before = float(base["full_valid_mean_reward"])
    if float(tuned) < before:
        sink.message(
            f"The fine-tuned model scores below the base model on validation (mean reward {float(tuned):.3f} "
            f"against {before:.3f} before training): training did not teach this task at this budget. The base "
            "model stays available; worked solutions in the rows (an explanation field), more rows, or a larger "
            "base model are the levers.",
            level="warn",
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
