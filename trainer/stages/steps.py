"""The step loop around an HF trainer: after every optimizer step, the results row, evaluation and checkpoint
when due, the RL watch's verdicts, the saved run state, the time estimate, and the stop check."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from trainer.distributed import shards_weights
from trainer.interface import TrainerError
from trainer.rollouts import preview
from trainer.stages.context import RunContext
from trainer.stages.validation import validate

if TYPE_CHECKING:
    from trainer.rl import PolicyVersions, StatsBox
    from trainer.watch import RLWatch, Verdict

_CKPT_KEYS = (
    "step",
    "train_loss",
    "train_mean_reward",
    "full_valid_mean_reward",
    "full_valid_accuracy",
    "valid_loss",
)


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class StageCallback(_callback_base()):  # type: ignore[misc]
    """Bridges HF Trainer events to the run: one :meth:`after_step` per optimizer step.

    ``rank_by_loss``: a supervised job chooses checkpoints by validation loss (no grader); otherwise every
    evaluation is the graded validation of :func:`validate`. An RL stage sets ``stats_box`` (what the reward
    function saw), ``versions`` (policy freshness) and ``watch`` (when to warn, stop early or fail).
    """

    def __init__(
        self, ctx: RunContext, stage: str, *, offset: int, eval_every: int | None, rank_by_loss: bool
    ) -> None:
        self.ctx = ctx
        self.stage = stage
        self.offset = offset
        self.eval_every = eval_every
        self.rank_by_loss = rank_by_loss
        self.stats_box: StatsBox | None = None
        self.versions: PolicyVersions | None = None
        self.watch: RLWatch | None = None
        self.step_started = time.perf_counter()
        self._pending: int | None = None
        self.stop_now = False
        """Set to end the stage after this step (checkpointed like a last step)."""

    # -- HF trainer events -----------------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.step_started = time.perf_counter()
        if self.versions is not None and model is not None:
            self.versions.register(model, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.versions is not None and model is not None:
            self.versions.register(model, state.global_step)
        self._pending = state.global_step

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if self._pending is not None and logs and "loss" in logs:
            step, self._pending = self._pending, None
            self.after_step(step, logs)
            if self.stop_now:
                control.should_training_stop = True

    # -- one optimizer step ----------------------------------------------------------------------------------

    def after_step(self, local_step: int, logs: dict[str, Any]) -> None:
        """Eval, checkpoint, report, stop: called once per optimizer step."""
        ctx, trainer = self.ctx, self.ctx.hf_trainer
        gstep = self.offset + local_step
        rec: dict[str, Any] = {
            "step": gstep,
            "stage": self.stage,
            "train_loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "full_iteration_s": time.perf_counter() - self.step_started,
        }
        if self.stats_box is not None:
            stats = self.stats_box.pop()
            if (
                ctx.world.distributed
            ):  # each rank graded its share: every rank sees the step's whole statistics
                from trainer.distributed import all_gather
                from trainer.rl import merge_stats

                stats = merge_stats(all_gather(stats, ctx.world))
            rec.update(stats.summary())
            ctx.rollouts.record(gstep, self.stage, stats.samples)
            rec["rollouts"] = preview(stats.samples)
            if self.watch is not None:
                self.act(
                    self.watch.on_step(
                        frac_flat=rec.get("frac_reward_zero_std"),
                        errors=rec.get("grader_error_counts") or {},
                        samples=len(stats.outcome),
                        mean_reward=rec.get("train_mean_reward"),
                        step=gstep,
                    )
                )
        rec["training_s"] = max(
            0.0, rec["full_iteration_s"] - (rec.get("sampling_s") or 0) - (rec.get("grading_s") or 0)
        )
        if self.watch is not None and not self.stop_now:
            self._check_time_budget(rec)
        ctx.step_times.append(rec["full_iteration_s"])
        last = local_step >= trainer.state.max_steps or self.stop_now
        due = self.eval_every is not None and local_step % self.eval_every == 0
        if last or due:
            self._evaluate(rec, trainer, last=last)
            with ctx.stopper.hold():
                metrics = {k: rec[k] for k in _CKPT_KEYS if rec.get(k) is not None}
                if shards_weights(ctx.options.distributed.strategy, ctx.world):
                    # Sharded weights: HF gathers them, which every rank must take part in.
                    ctx.ckpts.save(gstep, lambda d: trainer.save_model(str(d)), metrics, every_rank=True)
                else:
                    ctx.ckpts.save(gstep, trainer.model.save_pretrained, metrics)
                ctx.store.save_trainer(trainer)
                ctx.state.trainer_step[self.stage] = local_step
        elif self.stage == "sft" and local_step % max(1, trainer.state.max_steps // 4) == 0:
            with ctx.stopper.hold():  # a resume point for killed workers between evaluations
                ctx.store.save_trainer(trainer)
                ctx.state.trainer_step[self.stage] = local_step
        ctx.state.global_step = gstep
        if logs.get("num_tokens") is not None:
            ctx.state.counters[f"{self.stage}_tokens"] = int(float(logs["num_tokens"]))
        ctx.reporter.step(rec)
        ctx.save_state()
        self._update_estimate(gstep)
        self.step_started = time.perf_counter()
        ctx.stopper.check(budget=True)

    def _evaluate(self, rec: dict[str, Any], trainer: Any, *, last: bool) -> None:
        ctx = self.ctx
        t0 = time.perf_counter()
        if self.rank_by_loss:
            if trainer.eval_dataset is not None:
                with ctx.stopper.hold():
                    metrics = trainer.evaluate()
                rec["valid_loss"] = metrics.get("eval_loss")
        elif ctx.val_rows:
            rec.update(validate(ctx, trainer.model, step=rec["step"]))
            if self.watch is not None and not self.stop_now:
                prior = self._best_so_far()
                improved = prior is None or rec["full_valid_mean_reward"] > prior + 1e-9
                self.act([] if last else self.watch.on_eval(improved=improved))
        rec["eval_s"] = time.perf_counter() - t0
        rec["full_iteration_s"] += rec["eval_s"]

    def _best_so_far(self) -> float | None:
        """The best validation reward of this stage: its start (the model RL started from) and its evaluations."""
        ctx = self.ctx
        start = ctx.state.counters.get("rl_start") or {}
        seen = [float(start[start["start"]])] if start.get(start.get("start", "")) is not None else []
        seen += [
            float(r["full_valid_mean_reward"])
            for r in ctx.reporter.rows
            if r.get("stage") == self.stage and r.get("full_valid_mean_reward") not in (None, "")
        ]
        return max(seen) if seen else None

    def _check_time_budget(self, rec: dict[str, Any]) -> None:
        """End the stage at this step once it has run for the plan's time budget (a resumed stage counts its
        earlier steps too)."""
        budget = self.ctx.plan.rl_time_budget_s
        if budget is None:
            return
        spent = rec["full_iteration_s"] + sum(
            float(r.get("full_iteration_s") or 0)
            for r in self.ctx.reporter.rows
            if r.get("stage") == self.stage
        )
        if spent >= budget:
            self.ctx.sink.message(
                f"RL ended at its time budget ({budget / 60:.0f} min, openrft.rl.time_budget_minutes): the best "
                "checkpoint is kept."
            )
            self.stop_now = True

    def act(self, verdicts: list[Verdict]) -> None:
        """Carry out the RL watch's verdicts: a warning event, a failed job, or the stage ended early."""
        for v in verdicts:
            if v.action == "fail":
                raise TrainerError(v.message, code=v.code or "training_error")
            self.ctx.sink.message(v.message, level="warn")
            if v.action == "stop":
                self.stop_now = True

    def _update_estimate(self, gstep: int) -> None:
        ctx = self.ctx
        recent = ctx.step_times[-5:]
        per_step = sum(recent) / len(recent)
        # This stage's steps at their measured pace; the stages after it (an RL stage after SFT, the
        # evaluations) at their estimate, scaled by how the finished stages did against theirs.
        end = ctx.state.total_steps
        if self.stage == "sft" and ctx.plan.rl_enabled:
            end = ctx.state.stage_offsets.get("rl", end)
        if ctx.remaining is None:
            ctx.reporter.estimate(seconds_left=max(0, end - gstep) * per_step, step=gstep)
            return
        # Step times include the evaluations between steps: RL's (or SFT's when it is the last stage).
        last = self.stage == "rl" or not ctx.plan.rl_enabled
        covers = (self.stage, "eval") if last else (self.stage,)
        ctx.re_estimate(current=covers, current_left=max(0, end - gstep) * per_step)
