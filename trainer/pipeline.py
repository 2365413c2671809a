"""``run_job``: the OpenRFT pipeline from a :class:`JobSpec` to a fine-tuned adapter.

Stages (reinforcement): augment -> references -> synthesize -> sft -> rl; each is a switch in the job's
``openrft`` object and a module of ``trainer/stages`` working on one typed :class:`RunContext`. ``supervised``
runs LoRA SFT on the given conversations. This module only orders the stages and handles resume and stops.

The job's configuration changes form once: the request's ``hyperparameters`` and ``openrft`` objects (as the
API validated and stored them) are parsed into typed options here, and ``prepare`` resolves every ``auto`` for
this machine and this data into ``ctx.plan``, which the stages read (the RL probe may narrow it).

Working directory layout (``workdir``, private to one job)::

    state/            resumable run state; this directory is the pause snapshot (see trainer/resume.py)
    checkpoints/      step-N/: PEFT adapter + openrft_metrics.json, the best ``keep_checkpoints`` kept
    final/adapter/    the final model (a copy of the best checkpoint); final/merged/ with merge_weights
    results.csv       per-step metrics (the job's result file)
    rollouts.jsonl    one group of RL completions per step with their rewards (the second result file)
    hf/               scratch output directories of the HF trainers (nothing is read back from them)

Calling ``run_job`` again on a workdir that has ``state/state.json`` (a worker killed mid-run, or a resume)
continues where the saved state left off.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from trainer import distributed
from trainer.checkpoints import CheckpointManager
from trainer.config import ConfigError, ParsedConfig, parse_config
from trainer.control import StopRequested
from trainer.data import load_rows
from trainer.interface import (
    CHECKPOINTS_DIR,
    STATE_DIR,
    Control,
    EventSink,
    JobResult,
    JobSpec,
    NeverStop,
    NullSink,
    TrainerError,
)
from trainer.reporting import Reporter
from trainer.resume import RunState, StateStore
from trainer.rollouts import RolloutLog
from trainer.stages.context import Books, RunContext
from trainer.stages.finish import finish, stopped
from trainer.stages.prepare import announce_estimate, prepare, setup_icl


def run_job(spec: JobSpec, sink: EventSink, control: Control, workdir: Path) -> JobResult:
    """Run (or resume) one fine-tuning job. See the module docstring for the workdir layout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    distributed.ensure_group()  # under a launch: before any collective, with a timeout long enough for phases
    return Pipeline(spec, sink, control, Path(workdir)).run()


def evaluate_job(
    spec: JobSpec,
    workdir: Path,
    rows_file: Path,
    *,
    adapter_dir: Path | None,
    samples: int | None = None,
    temperature: float | None = None,
) -> Any:
    """Evaluate a job's model (``adapter_dir``, or the base model when None) on a held-out file, with exactly
    the prompts the job trained with (system prompt, the job's ICL example bank) and its eval protocol, or
    ``samples`` completions per question at ``temperature`` where given.

    Returns an :class:`trainer.evaluation.EvalResult`. Used by bench/quality for test-set accuracy.
    """
    from trainer.stages.validation import evaluate_rows

    _quiet_libraries()
    p = Pipeline(spec, NullSink(), NeverStop(), Path(workdir))
    if p.books.store.exists():
        p.books.state = p.books.store.load()
    p.books.state.resumes = 1  # an evaluation, not a (re)start: no start message
    ctx = prepare(p.books)
    try:
        rows = load_rows(rows_file, method=spec.method, param="validation_file", split="test")
        if ctx.reinforcement:
            setup_icl(ctx)
            if ctx.icl is not None:
                ctx.icl.precompute(rows)
        model: Any = ctx.base_model
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(ctx.base_model, str(adapter_dir))
        return evaluate_rows(
            ctx,
            model,
            rows,
            samples=ctx.plan.eval_samples if samples is None else samples,
            temperature=ctx.plan.eval_temperature if temperature is None else temperature,
        )
    finally:
        _close(ctx)


def _quiet_libraries() -> None:
    """Progress bars and per-step dict printing go to the worker's log otherwise; events carry the progress."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _close(ctx: RunContext | None) -> None:
    if ctx is not None and ctx.grader is not None:
        ctx.grader.__exit__(None, None, None)


class Pipeline:
    """One run: the bookkeeping first (so a resume can read its state), then ``prepare`` and the stages.

    Under a multi-process launch (trainer/distributed.py) every rank runs this same code: the HF trainers
    split batches and all-reduce gradients; rank 0 alone reports and writes files; a phase one process does for
    all (synthesis, references) runs on rank 0 and its results reach every rank (``RunContext.on_main``);
    evaluations (validation, the RL probe) are split over the ranks and gathered; stops
    are decided on rank 0 and taken by every rank at the same step boundary."""

    def __init__(self, spec: JobSpec, sink: EventSink, control: Control, workdir: Path) -> None:
        try:
            cfg: ParsedConfig = parse_config(spec.method, spec.hyperparameters, spec.openrft)
        except ConfigError as e:
            raise TrainerError(e.message, code="invalid_hyperparameters", param=e.param) from None
        opts = cfg.openrft
        self.workdir = workdir
        sink = distributed.main_sink(sink)
        self.books = Books(
            spec=spec,
            cfg=cfg,
            sink=sink,
            stopper=distributed.make_stopper(control, max_minutes=opts.max_minutes),
            workdir=workdir,
            store=StateStore(workdir / STATE_DIR),
            reporter=Reporter(sink, workdir / "results.csv"),
            rollouts=RolloutLog(workdir / "rollouts.jsonl"),
            ckpts=CheckpointManager(workdir / CHECKPOINTS_DIR, sink, keep=opts.keep_checkpoints),
            state=RunState(job_id=spec.job_id, method=spec.method),
        )
        self.ctx: RunContext | None = None

    def run(self) -> JobResult:
        books = self.books
        self.workdir.mkdir(parents=True, exist_ok=True)
        books.state = self._load_state()
        resumed_at = self._resume_point()
        books.reporter.load_rows(books.state.csv_rows, up_to_step=resumed_at)
        books.rollouts.truncate(resumed_at)
        books.ckpts.load_state(books.state.checkpoints)
        if books.state.resumes:
            books.sink.message(
                f"Resuming at step {resumed_at} (stages done: {', '.join(books.state.done) or 'none'})."
            )
        try:
            self.ctx = ctx = prepare(books)
            if books.spec.method == "supervised":
                _run_supervised(ctx)
            else:
                _run_reinforcement(ctx)
            return finish(ctx)
        except StopRequested as stop:
            ctx_ = self.ctx
            return stopped(
                ctx_ or books,  # the context's state: on_main replaces it with rank 0's on other ranks
                stop,
                stage=ctx_.stage if ctx_ else None,
                hf_trainer=ctx_.hf_trainer if ctx_ else None,
            )
        finally:
            _close(self.ctx)

    def _load_state(self) -> RunState:
        spec, store = self.books.spec, self.books.store
        if spec.resume_from is not None:
            if not (Path(spec.resume_from) / "state.json").is_file():
                raise TrainerError(
                    f"Cannot resume: {spec.resume_from} is not a snapshot (no state.json).",
                    code="resume_failed",
                )
            store.adopt(Path(spec.resume_from))
            distributed.barrier()  # rank 0 copies the snapshot; the others read it once it is there
        if store.exists():
            state = store.load()
            if state.job_id != spec.job_id:
                raise TrainerError(
                    f"The working directory belongs to job {state.job_id}, not {spec.job_id}.",
                    code="resume_failed",
                )
            state.resumes += 1
            return state
        return RunState(job_id=spec.job_id, method=spec.method)

    def _resume_point(self) -> int:
        """The global step a resumed run continues from (rows after it are recomputed)."""
        st = self.books.state
        if st.stage and st.stage in st.trainer_step:
            return st.stage_offsets.get(st.stage, 0) + st.trainer_step[st.stage]
        if st.stage and st.stage in st.stage_offsets:
            return st.stage_offsets[st.stage]
        return st.global_step


def _run_supervised(ctx: RunContext) -> None:
    from trainer.sft import sft_steps, supervised_examples
    from trainer.stages.sft import train_sft

    plan = ctx.plan
    examples = supervised_examples(ctx.train_rows)
    eval_examples = supervised_examples(ctx.val_rows) if ctx.val_rows else None
    steps = sft_steps(len(examples), plan.sft_batch_size, plan.sft_epochs)
    ctx.set_total_steps(steps)
    ctx.on_main(lambda: announce_estimate(ctx, sft_examples=len(examples), synthesis_questions=0))
    interval = max(1, math.ceil(steps / 4))
    train_sft(ctx, examples, eval_examples, offset=0, eval_every=interval, rank_by_loss=True)


def _run_reinforcement(ctx: RunContext) -> None:
    from trainer.sft import sft_steps
    from trainer.stages.probe import probe_rl
    from trainer.stages.references import references
    from trainer.stages.rl import choose_rl_start, start_plan, train_rl
    from trainer.stages.sft import train_sft
    from trainer.stages.validation import validate

    plan, state = ctx.plan, ctx.state
    n = len(ctx.train_rows)
    # total_steps before synthesis assumes every question yields an SFT example; fixed right after it.
    ctx.set_total_steps(
        state.total_steps
        or (
            (sft_steps(n, plan.sft_batch_size, plan.sft_epochs) if plan.sft_enabled else 0)
            + plan.rl_max_steps
        )
    )
    ctx.on_main(lambda: references(ctx))  # graded once, by rank 0; every rank gets them
    setup_icl(ctx)  # first: the calibration step times the real prompt, few-shot examples included
    refs = ctx.refs or {}
    with_ref = sum(bool(refs.get(r.uid)) for r in ctx.train_rows) if plan.sft_enabled else 0
    ctx.on_main(
        lambda: announce_estimate(
            ctx,
            sft_examples=n,
            synthesis_questions=with_ref,
            searched_questions=(n - with_ref) if plan.sft_enabled else 0,
        )
    )
    rl_rows = ctx.train_rows
    if ctx.options.augmentation.enabled and plan.rl_enabled:
        from trainer.augment import augment_rows

        rl_rows = ctx.train_rows + ctx.on_main(lambda: augment_rows(ctx))
        if ctx.icl is not None:
            ctx.icl.precompute(rl_rows)
    sft_examples: list[dict[str, Any]] = []
    if plan.sft_enabled:
        from trainer.synthesis import synthesize_traces

        sft_examples = ctx.on_main(lambda: synthesize_traces(ctx))
    n_sft = sft_steps(len(sft_examples), plan.sft_batch_size, plan.sft_epochs) if plan.sft_enabled else 0
    state.stage_offsets.setdefault("sft", 0)
    state.stage_offsets.setdefault("rl", n_sft)
    ctx.set_total_steps(n_sft + plan.rl_max_steps)
    if ctx.options.eval.at_start and ctx.val_rows and "eval0" not in state.done:
        rec = {"step": 0, "stage": "baseline", **validate(ctx, ctx.base_model, step=0)}
        ctx.reporter.step(rec)
        ctx.mark_done("eval0")
    if plan.sft_enabled and "sft" not in state.done:
        train_sft(ctx, sft_examples, None, offset=0, eval_every=None, rank_by_loss=False)
    if plan.rl_enabled and "rl" not in state.done:
        ctx.on_main(lambda: choose_rl_start(ctx))
        start_plan(ctx)
        if probe_rl(ctx, rl_rows):  # a collective: the ranks share the probe's prompts
            train_rl(ctx, rl_rows, offset=state.stage_offsets["rl"])
        else:
            ctx.shrink_plan(state.stage_offsets["rl"], "RL skipped")
            ctx.mark_done("rl")
