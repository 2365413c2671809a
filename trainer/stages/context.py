"""The typed state one run's stages share: the job, its parsed options and resolved plan, the bookkeeping
(events, results, checkpoints, resumable state), the data, and the models.

A :class:`Books` exists from the start of a run (a resume reads the saved state into it before anything is
loaded); :class:`RunContext` adds what :func:`trainer.stages.prepare.prepare` loads. Stages are functions of a
``RunContext``; what they change on it is named here, not scattered over attributes of a pipeline object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from trainer.checkpoints import CheckpointManager
from trainer.config import OpenRFTConfig, ParsedConfig, RunPlan
from trainer.control import Stopper
from trainer.data import Row
from trainer.distributed import World, broadcast, current, on_main
from trainer.estimate import Remaining, parts_done
from trainer.interface import EventSink, JobSpec, TrainerError
from trainer.prompts import Messages, build_prompt
from trainer.reporting import Reporter
from trainer.resume import RunState, StateStore
from trainer.rollouts import RolloutLog

if TYPE_CHECKING:
    from trainer.grading import Grader
    from trainer.icl import ExampleBank

T = TypeVar("T")


@dataclass
class Books:
    """Where a run reports and what survives it: built before anything is loaded."""

    spec: JobSpec
    cfg: ParsedConfig
    sink: EventSink
    stopper: Stopper
    workdir: Path
    store: StateStore
    reporter: Reporter
    rollouts: RolloutLog
    ckpts: CheckpointManager
    state: RunState
    world: World = field(default_factory=current)
    """This process's rank in a multi-process run (trainer.distributed); a world of one otherwise."""

    @property
    def options(self) -> OpenRFTConfig:
        """The job's ``openrft`` options, validated (switches and settings the plan does not resolve)."""
        return self.cfg.openrft

    def save_state(self) -> None:
        self.state.csv_rows = self.reporter.rows
        self.state.checkpoints = self.ckpts.to_state()
        self.store.save(self.state)

    def mark_done(self, stage: str) -> None:
        if stage not in self.state.done:
            self.state.done.append(stage)
        self.state.trainer_step.pop(stage, None)
        if self.state.stage == stage:
            self.state.stage = None
        self.save_state()

    def set_total_steps(self, total: int) -> None:
        self.reporter.total_steps = self.state.total_steps = total


@dataclass
class RunContext(Books):
    """Everything a stage reads or changes. Set by ``prepare``; ``plan`` may be narrowed by the RL probe."""

    plan: RunPlan = field(kw_only=True)
    gpu: bool = field(kw_only=True)
    model_dir: str = field(kw_only=True)
    """The base model's local directory (converted from GGUF where needed)."""
    tokenizer: Any = field(kw_only=True)
    base_model: Any = field(kw_only=True)
    """The frozen base weights (PEFT adapters attach to them)."""
    grader: Grader | None = field(kw_only=True)
    train_rows: list[Row] = field(kw_only=True)
    val_rows: list[Row] = field(kw_only=True)
    policy_model: Any = field(default=None, kw_only=True)
    """The trainable PEFT model once a stage made one (kept across SFT -> RL in one process)."""
    icl: ExampleBank | None = field(default=None, kw_only=True)
    refs: dict[str, str | None] | None = field(default=None, kw_only=True)
    """Graded-correct reference responses per row uid (see trainer.stages.references)."""
    stage: str | None = field(default=None, kw_only=True)
    hf_trainer: Any = field(default=None, kw_only=True)
    """The HF trainer of the stage in progress: a pause saves its checkpoint."""
    step_times: list[float] = field(default_factory=list, kw_only=True)
    stage_policy: str | None = field(default=None, kw_only=True)
    """The stage whose starting policy ``policy_model`` is ("rl" once :meth:`policy_for_rl` built it)."""
    remaining: Remaining | None = field(default=None, kw_only=True)
    """The duration estimate, re-estimated from measured progress (set by ``announce_estimate``)."""

    def mark_done(self, stage: str) -> None:
        super().mark_done(stage)
        self.re_estimate()

    def finished_parts(self) -> set[str]:
        return parts_done(self.state.done, self.state.counters, rl=self.plan.rl_enabled)

    def re_estimate(self, *, current: tuple[str, ...] = (), current_left: float = 0.0) -> None:
        """Report the time left (the job's ``estimated_finish``): what is not done yet at its estimate, scaled by
        how long the done part took against its own, plus the stage in progress (``current``: the parts it covers)
        at its measured pace, so the time left follows the job instead of running out before it ends."""
        if self.remaining is None:
            return
        left = self.remaining.seconds_left(
            self.finished_parts(), now=time.monotonic(), current=current, current_left=current_left
        )
        self.reporter.estimate(seconds_left=left, step=self.state.global_step)

    @property
    def private_url_hosts(self) -> list[str]:
        """The operator's hosts a user URL may reach though they are not public (trainer.public_urls)."""
        return list(self.spec.grader_settings.get("private_url_hosts") or [])

    @property
    def reinforcement(self) -> bool:
        return self.spec.method == "reinforcement"

    def on_main(self, phase: Callable[[], T]) -> T:
        """Run a phase one process does for all (synthesis, the probe, an estimate) on rank 0, then give every
        rank its result and what it changed of the run: the state (stages done, counters, step offsets) and the
        plan. In a world of one this is ``phase()``."""
        out = on_main(phase, world=self.world, stopper=self.stopper)
        if self.world.distributed:
            self.state, self.plan, self.refs = broadcast((self.state, self.plan, self.refs), self.world)
        return out

    def training_world(self) -> dict[str, Any]:
        """The HF trainer arguments of a multi-process run: the world size (batches are global and split over
        the ranks) and the sharding strategy's fields."""
        if not self.world.distributed:
            return {}
        from trainer.distributed import strategy_args

        return {
            "world_size": self.world.world_size,
            "strategy": strategy_args(self.options.distributed.strategy),
        }

    def need_grader(self) -> Grader:
        if self.grader is None:
            raise TrainerError(
                "A reinforcement job needs a grader.", code="invalid_grader", param="method.grader"
            )
        return self.grader

    def prompt_for(self, row: Row) -> Messages:
        """The prompt of ``row`` exactly as every stage uses it (system prompt, few-shot examples)."""
        examples = self.icl.examples_for(row) if self.icl is not None else None
        return build_prompt(row, system_prompt=self.options.system_prompt, examples=examples)

    def narrow_plan(self, **changes: Any) -> None:
        self.plan = replace(self.plan, **changes)

    def shrink_plan(self, total: int, why: str) -> None:
        """The job's step count shrinks to what ran; a metrics event carries it to progress bars."""
        self.set_total_steps(total)
        self.sink.metrics(
            f"{why}: the job ends at step {total}.",
            {"step": self.state.global_step, "total_steps": total, "stage": "plan"},
        )

    def policy(self, adapter_dir: Path | None = None) -> Any:
        """The trainable PEFT model: reuse the in-memory one, else attach (or load) the adapter."""
        from trainer.lora import attach_adapter

        if self.policy_model is not None and adapter_dir is None:
            return self.policy_model
        if self.policy_model is not None:  # replace: unload the previous adapter from the shared base
            self.base_model = self.policy_model.unload()
        opts = self.options
        self.policy_model = attach_adapter(
            self.base_model,
            rank=opts.lora_rank,
            alpha=self.plan.lora_alpha,
            dropout=opts.lora_dropout,
            adapter_dir=adapter_dir,
        )
        if self.gpu:
            # Gradient checkpointing (on for GPUs) needs a grad-requiring input when only adapters train.
            self.policy_model.enable_input_require_grads()
        return self.policy_model

    def rl_start(self) -> str:
        """Where RL starts: "sft" (the SFT adapter) or "base" (a new adapter on the base model), as decided
        after SFT (:func:`trainer.stages.rl.choose_rl_start`, kept in the run state)."""
        return str((self.state.counters.get("rl_start") or {}).get("start", "sft"))

    def policy_for_rl(self) -> Any:
        """The policy RL and its probe start from: a freshly loaded base model with the saved SFT adapter, or a
        new adapter where RL starts from the base. Loaded afresh rather than handed over from SFT: an SFT
        trainer's engine (DeepSpeed ZeRO, FSDP) wraps and partitions its module and keeps hooks on it, which a
        second trainer must not inherit; this is also exactly what a resumed job loads."""
        if self.stage_policy == "rl":
            return self.policy_model
        from trainer.models import load_model

        adapter = self.store.artifacts / "sft_adapter"
        start = adapter if self.rl_start() == "sft" and adapter.is_dir() else None
        self.release_policy()
        self.base_model = load_model(self.model_dir)
        model = self.policy(start)
        self.stage_policy = "rl"
        return model

    def release_policy(self) -> None:
        """Drop the trained module and the base it wraps, and free their memory (a fresh one is loaded next)."""
        import gc

        self.policy_model = None
        self.base_model = None
        self.stage_policy = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a trainer dependency
            pass

    def begin_stage(self, stage: str) -> str | None:
        """Mark ``stage`` current; returns the HF checkpoint to resume it from, if one exists for it."""
        self.stage = stage
        resume = None
        st = self.state
        if st.stage == stage and stage in st.trainer_step and self.store.trainer_checkpoint():
            resume = str(self.store.trainer_checkpoint())
        else:
            st.trainer_step.pop(stage, None)
        st.stage = stage
        self.save_state()
        return resume

    def train(self, trainer: Any, model: Any, resume: str | None) -> None:
        """Run an HF trainer to its end (or an early stop), keeping its model as the policy."""
        self.hf_trainer = trainer
        with self.stopper.watch_forward(model):
            trainer.train(resume_from_checkpoint=resume)
        self.policy_model = trainer.model
        self.hf_trainer = None
        self.store.clear_trainer()

    def check_grader_errors(self, errors: dict[str, int] | None, samples: int, where: str) -> None:
        """Grader errors on a few samples are noise; on most, the reward measures nothing: fail early."""
        from trainer.watch import ERROR_FAIL, ERROR_WARN, error_share, grader_failures

        share = error_share(errors, samples)
        kinds = ", ".join(f"{k}: {v}" for k, v in grader_failures(errors).items())
        if share > ERROR_FAIL and samples >= 4:
            raise TrainerError(
                f"The grader failed on {share:.0%} of the {samples} samples of {where} ({kinds}): the reward would "
                "measure nothing. Check the grader with POST /v1/fine_tuning/alpha/graders/run on a training row "
                "(for model graders: the grader model's endpoint and key) and start the job again.",
                code="grader_error",
            )
        if share > ERROR_WARN:
            self.sink.message(
                f"The grader failed on {share:.0%} of the {samples} samples of {where} ({kinds}); those score 0.",
                level="warn",
            )
