"""``run_job``: the OpenRFT pipeline from a :class:`JobSpec` to a fine-tuned adapter.

Stages (reinforcement): augment -> references -> synthesize -> sft -> rl; each is a switch in the job's
``openrft`` object. ``supervised`` runs LoRA SFT on the given conversations.

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

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from trainer.checkpoints import CheckpointManager, atomic_dir, atomic_write_text
from trainer.config import (
    ConfigError,
    Hardware,
    ParsedConfig,
    RunPlan,
    parse_config,
    plan_run,
    redact_secrets,
)
from trainer.control import Stopper, StopRequested
from trainer.data import Row, load_rows
from trainer.interface import Control, EventSink, JobResult, JobSpec, NeverStop, NullSink, TrainerError
from trainer.prompts import Messages, build_prompt
from trainer.reporting import Reporter
from trainer.resume import RunState, StateStore
from trainer.rollouts import RolloutLog, preview


def run_job(spec: JobSpec, sink: EventSink, control: Control, workdir: Path) -> JobResult:
    """Run (or resume) one fine-tuning job. See the module docstring for the workdir layout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
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
    from trainer.evaluation import evaluate

    _quiet_libraries()
    p = Pipeline(spec, NullSink(), NeverStop(), Path(workdir))
    p.state = p.store.load() if p.store.exists() else RunState(job_id=spec.job_id, method=spec.method)
    p.state.resumes = 1  # an evaluation, not a (re)start: no start message
    try:
        p._prepare()
        rows = load_rows(rows_file, method=spec.method, param="validation_file", split="test")
        if spec.method == "reinforcement":
            p._setup_icl()
            if p.icl is not None:
                p.icl.precompute(rows)
        model: Any = p.base_model
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(p.base_model, str(adapter_dir))
        plan = p._plan()
        return evaluate(
            model,
            p.tokenizer,
            [p.prompt_for(r) for r in rows],
            [r.item for r in rows],
            p.grader,
            samples=plan.eval_samples if samples is None else samples,
            temperature=plan.eval_temperature if temperature is None else temperature,
            max_new_tokens=plan.max_completion_length,
        )
    finally:
        if p.grader is not None:
            p.grader.__exit__(None, None, None)


def _quiet_libraries() -> None:
    """Progress bars and per-step dict printing go to the worker's log otherwise; events carry the progress."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


class Pipeline:
    def __init__(self, spec: JobSpec, sink: EventSink, control: Control, workdir: Path) -> None:
        self.spec = spec
        self.sink = sink
        self.workdir = workdir
        try:
            self.cfg: ParsedConfig = parse_config(spec.method, spec.hyperparameters, spec.openrft)
        except ConfigError as e:
            raise TrainerError(e.message, code="invalid_hyperparameters", param=e.param) from None
        self.ext = self.cfg.openrft
        self.stopper = Stopper(control, max_minutes=self.ext.max_minutes)
        self.store = StateStore(workdir / "state")
        self.reporter = Reporter(sink, workdir / "results.csv")
        self.rollouts = RolloutLog(workdir / "rollouts.jsonl")
        self.ckpts = CheckpointManager(workdir / "checkpoints", sink, keep=self.ext.keep_checkpoints)
        self.trainer: Any = None
        self.stage: str | None = None
        self.plan: RunPlan | None = None
        self.model: Any = None
        self.grader: Any = None
        self.val_rows: list[Row] = []
        self.train_rows: list[Row] = []
        self.icl: Any = None
        self._refs: dict[str, str | None] | None = None
        self.rl_temperature = self.ext.rl.temperature
        self.watch: Any = None
        self._t_step = time.perf_counter()
        self._step_times: list[float] = []

    # -- state ---------------------------------------------------------------------------------------------

    def _load_state(self) -> RunState:
        if self.spec.resume_from is not None:
            if not (Path(self.spec.resume_from) / "state.json").is_file():
                raise TrainerError(
                    f"Cannot resume: {self.spec.resume_from} is not a snapshot (no state.json).",
                    code="resume_failed",
                )
            self.store.adopt(Path(self.spec.resume_from))
        if self.store.exists():
            state = self.store.load()
            if state.job_id != self.spec.job_id:
                raise TrainerError(
                    f"The working directory belongs to job {state.job_id}, not {self.spec.job_id}.",
                    code="resume_failed",
                )
            state.resumes += 1
            return state
        return RunState(job_id=self.spec.job_id, method=self.spec.method)

    def save_state(self) -> None:
        self.state.csv_rows = self.reporter.rows
        self.state.checkpoints = self.ckpts.to_state()
        self.store.save(self.state)

    # -- entry -----------------------------------------------------------------------------------------------

    def run(self) -> JobResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state = self._load_state()
        resumed_at = self._resume_point()
        self.reporter.load_rows(self.state.csv_rows, up_to_step=resumed_at)
        self.rollouts.truncate(resumed_at)
        self.ckpts.load_state(self.state.checkpoints)
        if self.state.resumes:
            self.sink.message(
                f"Resuming at step {resumed_at} (stages done: {', '.join(self.state.done) or 'none'})."
            )
        try:
            self._prepare()
            if self.spec.method == "supervised":
                self._run_supervised()
            else:
                self._run_reinforcement()
            return self._finish()
        except StopRequested as stop:
            return self._stopped(stop)
        finally:
            if self.grader is not None:
                self.grader.__exit__(None, None, None)

    def _resume_point(self) -> int:
        """The global step a resumed run continues from (rows after it are recomputed)."""
        st = self.state
        if st.stage and st.stage in st.trainer_step:
            return st.stage_offsets.get(st.stage, 0) + st.trainer_step[st.stage]
        if st.stage and st.stage in st.stage_offsets:
            return st.stage_offsets[st.stage]
        return st.global_step

    def _prepare(self) -> None:
        import torch

        spec = self.spec
        self.train_rows = load_rows(spec.training_file, method=spec.method, param="training_file")
        if spec.validation_file is not None:
            self.val_rows = load_rows(spec.validation_file, method=spec.method, param="validation_file")
            if self.ext.eval.max_samples:
                self.val_rows = self.val_rows[: self.ext.eval.max_samples]
        if spec.method == "reinforcement" and self.ext.rl.enabled:
            self._hold_out()
        self.use_cpu = not torch.cuda.is_available()
        self.hardware = Hardware(gpu=not self.use_cpu, cpu_count=os.cpu_count() or 1)
        from importlib.util import find_spec

        self.plan = plan_run(
            self.cfg,
            n_train=len(self.train_rows),
            hardware=self.hardware,
            vllm_available=find_spec("vllm") is not None,
        )
        from trainer.models import load_model, load_tokenizer, resolve_model_dir

        self.model_dir = resolve_model_dir(spec.model_source, cache_dir=spec.cache_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        torch.manual_seed(spec.seed)
        self.base_model = load_model(self.model_dir)
        if spec.method == "reinforcement":
            if not spec.grader:
                raise TrainerError(
                    "A reinforcement job needs a grader.", code="invalid_grader", param="method.grader"
                )
            from trainer.grading import Grader

            self.grader = Grader(
                spec.grader, spec.grader_settings, pass_threshold=self.ext.eval.pass_threshold
            )
            self.grader.__enter__()
        if not self.state.resumes:
            self.sink.message(
                f"Training {spec.method} job on {spec.base_model} ({'GPU' if not self.use_cpu else 'CPU'}): "
                f"{len(self.train_rows)} training rows, {len(self.val_rows)} validation rows. "
                f"Settings: {json.dumps(redact_secrets(self.plan.as_dict()))}"
            )

    def _hold_out(self) -> None:
        """Move training rows to the checkpoint-selection set when the validation file is small (see
        ``eval.holdout``): choosing between the SFT and RL checkpoints on 20 rows is mostly noise."""
        from trainer.data import hold_out

        want = self.ext.eval.holdout
        n_val, n_train = len(self.val_rows), len(self.train_rows)
        k = int(want) if want != "auto" else (min(40 - n_val, n_train // 5) if n_val < 40 else 0)
        self.train_rows, held = hold_out(self.train_rows, k, seed=self.spec.seed)
        if held:
            self.val_rows = self.val_rows + held
            if not self.state.resumes:
                self.sink.message(
                    f"Checkpoint choice: {len(held)} training rows are held out of training and join the "
                    f"{n_val} validation rows ({len(self.val_rows)} in all; set openrft.eval.holdout to change)."
                )

    # -- supervised -------------------------------------------------------------------------------------------

    def _run_supervised(self) -> None:
        from trainer.sft import sft_steps, supervised_examples

        plan = self._plan()
        examples = supervised_examples(self.train_rows)
        eval_examples = supervised_examples(self.val_rows) if self.val_rows else None
        steps = sft_steps(len(examples), plan.sft_batch_size, plan.sft_epochs)
        self.reporter.total_steps = self.state.total_steps = steps
        self._announce_estimate(sft_examples=len(examples), synthesis_questions=0)
        interval = max(1, math.ceil(steps / 4))
        self._train_sft(examples, eval_examples, offset=0, eval_every=interval, rank_by_loss=True)

    # -- reinforcement --------------------------------------------------------------------------------------

    def _run_reinforcement(self) -> None:
        from trainer.sft import sft_steps

        plan = self._plan()
        n = len(self.train_rows)
        # total_steps before synthesis assumes every question yields an SFT example; fixed right after it.
        self.reporter.total_steps = self.state.total_steps or (
            (sft_steps(n, plan.sft_batch_size, plan.sft_epochs) if plan.sft_enabled else 0)
            + plan.rl_max_steps
        )
        self._setup_icl()  # first: the calibration step times the real prompt, few-shot examples included
        self._announce_estimate(sft_examples=n, synthesis_questions=n if plan.sft_enabled else 0)
        rl_rows = self.train_rows
        if self.ext.augmentation.enabled and plan.rl_enabled:
            from trainer.augment import augment_rows

            rl_rows = self.train_rows + augment_rows(self)
            if self.icl is not None:
                self.icl.precompute(rl_rows)
        sft_examples: list[dict[str, Any]] = []
        if plan.sft_enabled:
            sft_examples = self._synthesize()
        n_sft = sft_steps(len(sft_examples), plan.sft_batch_size, plan.sft_epochs) if plan.sft_enabled else 0
        self.state.stage_offsets.setdefault("sft", 0)
        self.state.stage_offsets.setdefault("rl", n_sft)
        self.reporter.total_steps = self.state.total_steps = n_sft + plan.rl_max_steps
        if self.ext.eval.at_start and self.val_rows and "eval0" not in self.state.done:
            rec = {"step": 0, "stage": "baseline"}
            rec.update(self._evaluate(self.base_model))
            self.reporter.step(rec)
            self._mark_done("eval0")
        if plan.sft_enabled and "sft" not in self.state.done:
            self._train_sft(sft_examples, None, offset=0, eval_every=None, rank_by_loss=False)
        if plan.rl_enabled and "rl" not in self.state.done:
            if self._probe_rl(rl_rows):
                self._train_rl(rl_rows, offset=self.state.stage_offsets["rl"])
            else:
                self._shrink_plan(self.state.stage_offsets["rl"], "RL skipped")
                self._mark_done("rl")

    def _shrink_plan(self, total: int, why: str) -> None:
        """The job's step count shrinks to what ran; a metrics event carries it to progress bars."""
        self.reporter.total_steps = self.state.total_steps = total
        self.sink.metrics(
            f"{why}: the job ends at step {total}.",
            {"step": self.state.global_step, "total_steps": total, "stage": "plan"},
        )

    def _probe_rl(self, rows: list[Row]) -> bool:
        """Before RL, measure on a few training prompts whether GRPO would get any gradient (groups whose
        rewards differ). Mostly flat: retry once with groups twice as large and keep them if they help (fewer
        steps, the same number of rollouts). All flat: skip RL (False), saying why and what to do.
        The decision is kept in the run state, so a resumed run applies it without probing again."""
        from dataclasses import replace

        from trainer.watch import probe_spread

        saved = self.state.counters.get("rl_probe")
        plan = self._plan()
        if saved is None:
            k = min(self.ext.rl.probe_prompts, len(rows))
            if k == 0:
                return True
            picked = [rows[i * len(rows) // k] for i in range(k)]  # spread over the file, deterministic
            adapter = self.store.artifacts / "sft_adapter"
            model = self._policy(adapter if self.model is None and adapter.is_dir() else None)
            # The retry doubles the group, not the temperature: a hotter small model mostly rambles to the token
            # limit (slow, and no more often right).
            settings = [(self.ext.rl.temperature, plan.num_generations)]
            if self.ext.rl.num_generations == "auto" and plan.num_generations < 16:
                settings.append((self.ext.rl.temperature, min(16, 2 * plan.num_generations)))
            tried = []
            for temperature, groups in settings:
                spread = probe_spread(
                    model,
                    self.tokenizer,
                    [self.prompt_for(r) for r in picked],
                    [r.item for r in picked],
                    self.grader,
                    num_generations=groups,
                    temperature=temperature,
                    max_new_tokens=plan.max_completion_length,
                    stopper=self.stopper,
                )
                self._check_grader_errors(spread.grader_errors, spread.samples, "the RL probe")
                tried.append({"temperature": temperature, "num_generations": groups, **spread.as_dict()})
                self.sink.metrics(
                    f"RL probe: {k} training prompts x {groups} rollouts at temperature {temperature:g}: "
                    f"{spread.describe()}.",
                    {"step": self.state.global_step, "stage": "rl_probe", **tried[-1]},
                )
                if spread.frac_flat < 0.75 or spread.all_correct == spread.groups:
                    break
            best = min(tried, key=lambda t: (t["frac_reward_zero_std"], len(tried)))
            flat = best["frac_reward_zero_std"] >= 1.0
            saved = {"tried": tried, "chosen": best, "skip": flat and self.ext.rl.early_stop, "flat": flat}
            self.state.counters["rl_probe"] = saved
            self.save_state()
            self._announce_probe(saved, k)
        chosen = saved["chosen"]
        if saved["skip"]:
            return False
        if chosen["num_generations"] != plan.num_generations:
            steps = max(1, round(plan.rl_max_steps * plan.num_generations / chosen["num_generations"]))
            self.plan = replace(plan, num_generations=chosen["num_generations"], rl_max_steps=steps)
            self.reporter.total_steps = self.state.total_steps = self.state.stage_offsets["rl"] + steps
        self.rl_temperature = float(chosen["temperature"])
        return True

    def _announce_probe(self, saved: dict[str, Any], k: int) -> None:
        chosen = saved["chosen"]
        if saved.get("flat") and not saved["skip"]:
            self.sink.message(
                f"RL cannot learn from these probe groups ({chosen['flat']}/{k} without reward spread); it runs "
                "anyway because openrft.rl.early_stop is false.",
                level="warn",
            )
            return
        if not saved["skip"]:
            if len(saved["tried"]) > 1 and chosen is saved["tried"][-1]:
                self.sink.message(
                    f"RL adapted: groups of {chosen['num_generations']} rollouts (the planned settings left {saved['tried'][0]['flat']} of {k} probe "
                    "groups without reward spread); the step count is scaled to keep the rollout budget.",
                    level="warn",
                )
            elif chosen["frac_reward_zero_std"] >= 0.5:
                self.sink.message(
                    f"RL will learn from few groups: {chosen['flat']}/{k} probe groups have no reward spread.",
                    level="warn",
                )
            return
        if chosen["all_correct"] == chosen["groups"]:
            why = (
                "every probed rollout is already graded correct, so GRPO has nothing to learn from; the model "
                "after SFT is kept. Harder training questions (or a grader with partial credit) give RL a signal."
            )
        else:
            have_refs = any((self._refs or {}).values())
            why = (
                "every rollout of every probed prompt scored the same, so GRPO would get no gradient; the model "
                + ("after SFT " if self._plan().sft_enabled else "")
                + "is kept. "
                + (
                    "SFT on the reference answers did not make any rollout right: the task may be beyond this "
                    "model, or it needs worked solutions in the rows (an explanation field) rather than bare "
                    "answers; a grader with partial credit also gives RL a signal."
                    if have_refs
                    else "Check that the grader accepts a correct reply (POST /v1/fine_tuning/alpha/graders/run), "
                    "give reference answers (openrft.reference) so SFT teaches the task first, allow longer answers "
                    "(reasoning_effort) if replies are cut short, or use a grader with partial credit."
                )
            )
        self.sink.message(f"RL skipped: {why}", level="warn")

    def _check_grader_errors(self, errors: dict[str, int] | None, samples: int, where: str) -> None:
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

    def references(self) -> dict[str, str | None]:
        """Graded-correct reference responses of the training rows (fallback traces, ICL answers); cached."""
        if self._refs is not None:
            return self._refs
        path = self.store.artifact("references.json")
        if path.is_file():
            self._refs = json.loads(path.read_text())
            return self._refs
        from trainer.data import question
        from trainer.references import reference_responses

        refs = reference_responses(
            self.train_rows,
            self.grader,
            grader_spec=self.grader.spec,
            reference=self.ext.reference,
            template=self.ext.response_template,
            # The task's instructions decide the form tried first: the system prompt and the question itself.
            instruction=(self.ext.system_prompt or "") + "\n" + question(self.train_rows[0]),
        )
        self._refs = {r.uid: text for r, text in zip(self.train_rows, refs.responses, strict=True)}
        atomic_write_text(path, json.dumps(self._refs))
        self.state.counters["references"] = {"by_source": refs.by_source, "by_template": refs.by_template}
        ok = any(refs.responses)
        hint = (
            ""
            if ok
            else " Without them a question no sampled trace solves is left out of SFT, and few-shot examples "
            "are empty. Set openrft.reference to the template of a row's answer (e.g. '{{ item.answer }}') and, "
            "if the grader wants more than the bare answer, openrft.response_template (e.g. 'Answer: {answer}')."
        )
        self.sink.message(f"Reference responses: {refs.summary()}{hint}", level="info" if ok else "warn")
        return self._refs

    def _setup_icl(self) -> None:
        if self.ext.icl_k <= 0 or self.icl is not None:
            return
        from trainer.icl import Embedder, ExampleBank

        self.icl = ExampleBank(self.train_rows, self.references(), k=self.ext.icl_k, embedder=Embedder())
        self.icl.precompute(self.train_rows + self.val_rows)
        n = len(self.icl.rows)
        self.sink.message(f"Few-shot ICL: {self.ext.icl_k} nearest of {n} worked examples in every prompt.")

    def _announce_estimate(self, *, sft_examples: int, synthesis_questions: int) -> None:
        """Once per job: time a calibration step and report the estimated duration."""
        if "estimate" in self.state.done:
            return
        from trainer.estimate import calibrate, estimate_seconds

        plan = self._plan()
        prompt = self.prompt_for(self.train_rows[0])
        if self.spec.method == "supervised":
            prompt = prompt[:-1] if prompt and prompt[-1].get("role") == "assistant" else prompt
        batch = plan.rl_batch_size * plan.num_generations if plan.rl_enabled else plan.sft_batch_size
        cal = calibrate(
            self.base_model,
            self.tokenizer,
            prompt,
            batch=max(1, batch),
            new_tokens=min(32, plan.max_completion_length),
        )
        parts = estimate_seconds(
            plan,
            cal,
            n_val=len(self.val_rows),
            sft_examples=sft_examples,
            synthesis_questions=synthesis_questions,
            prm_factor=2.0 if self.ext.prm.type == "self" else 0.0,
            trained_tokens=self._reference_tokens(),
            **self._augmentation_load(plan),
        )
        total = sum(parts.values())
        self.state.counters["estimate_s"] = parts
        shown = ", ".join(f"{k} {v / 60:.1f}" for k, v in parts.items() if v)
        self.sink.message(
            f"Estimated duration: {total / 60:.1f} min ({shown} min; calibration: {cal.gen_tokens_per_s:.0f} "
            f"generated tokens/s, {cal.train_s_per_seq:.2f} s per trained sequence)."
        )
        self.reporter.estimate(seconds_left=total, step=self.state.global_step)
        self._mark_done("estimate")

    def _reference_tokens(self) -> float | None:
        """Mean length in tokens of the responses SFT will train on (the reference responses), or None."""
        if self.spec.method == "supervised" or self.grader is None:
            return None
        texts = [t for t in self.references().values() if t]
        if not texts:
            return None
        return sum(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts)

    def _augmentation_load(self, plan: RunPlan) -> dict[str, int]:
        """What question augmentation will ask of a teacher (paraphrases are sampled only for RL rows)."""
        aug = self.ext.augmentation
        if self.spec.method != "reinforcement" or not (aug.enabled and aug.paraphrase and plan.rl_enabled):
            return {}
        return {"augmentation_questions": len(self.train_rows), "augmentation_tokens": aug.max_new_tokens}

    def _synthesize(self) -> list[dict[str, Any]]:
        """SFT examples for the reinforcement warm-up (prompt identical to RL and eval)."""
        from trainer.synthesis import synthesize_traces

        return synthesize_traces(self)

    # -- prompts ---------------------------------------------------------------------------------------------

    def prompt_for(self, row: Row) -> Messages:
        examples = self.icl.examples_for(row) if self.icl is not None else None
        return build_prompt(row, system_prompt=self.ext.system_prompt, examples=examples)

    # -- stages with an HF trainer ---------------------------------------------------------------------------

    def _plan(self) -> RunPlan:
        assert self.plan is not None
        return self.plan

    def _policy(self, adapter_dir: Path | None = None) -> Any:
        """The trainable PEFT model: reuse the in-memory one, else attach (or load) the adapter."""
        from trainer.lora import attach_adapter

        if self.model is not None and adapter_dir is None:
            return self.model
        plan = self._plan()
        if self.model is not None:  # replace: unload the previous adapter from the shared base
            self.base_model = self.model.unload()
        self.model = attach_adapter(
            self.base_model,
            rank=self.ext.lora_rank,
            alpha=plan.lora_alpha,
            dropout=self.ext.lora_dropout,
            adapter_dir=adapter_dir,
        )
        if not self.use_cpu:
            # Gradient checkpointing (on for GPUs) needs a grad-requiring input when only adapters train.
            self.model.enable_input_require_grads()
        return self.model

    def _begin_stage(self, stage: str) -> str | None:
        """Mark ``stage`` current; returns the HF checkpoint to resume it from, if one exists for it."""
        self.stage = stage
        resume = None
        if self.state.stage == stage and stage in self.state.trainer_step and self.store.trainer_checkpoint():
            resume = str(self.store.trainer_checkpoint())
        else:
            self.state.trainer_step.pop(stage, None)
        self.state.stage = stage
        self.save_state()
        return resume

    def _train_sft(
        self,
        examples: list[dict[str, Any]],
        eval_examples: list[dict[str, Any]] | None,
        *,
        offset: int,
        eval_every: int | None,
        rank_by_loss: bool,
    ) -> None:
        from trainer.sft import make_sft_trainer

        plan = self._plan()
        if not examples:
            self.sink.message("SFT skipped: no training examples.", level="warn")
            self._mark_done("sft")
            return
        resume = self._begin_stage("sft")
        model = self._policy()
        cb = StageCallback(self, "sft", offset=offset, eval_every=eval_every, supervised=rank_by_loss)
        self.trainer = make_sft_trainer(
            model=model,
            tokenizer=self.tokenizer,
            examples=examples,
            eval_examples=eval_examples,
            output_dir=str(self.workdir / "hf" / "sft"),
            batch_size=plan.sft_batch_size,
            epochs=plan.sft_epochs,
            learning_rate=plan.sft_learning_rate,
            max_length=self.ext.sft.max_length,
            seed=self.spec.seed,
            use_cpu=self.use_cpu,
            callbacks=[cb],
        )
        self.sink.message(
            f"SFT: {len(examples)} examples, {plan.sft_epochs} epochs, batch {plan.sft_batch_size}, "
            f"lr {plan.sft_learning_rate:g}"
            + (f" (resuming at step {self.state.trainer_step['sft']})" if resume else "")
        )
        with self.stopper.watch_forward(model):
            self.trainer.train(resume_from_checkpoint=resume)
        self.model = self.trainer.model
        if self.spec.method == "reinforcement":
            self.model.save_pretrained(str(self.store.artifact("sft_adapter")))
        self.trainer = None
        self.store.clear_trainer()
        self._mark_done("sft")

    def _train_rl(self, rows: list[Row], *, offset: int) -> None:
        from datasets import Dataset

        from trainer.rl import (
            GraderReward,
            PolicyVersions,
            StatsBox,
            grpo_args,
            make_grpo_trainer,
            vllm_kwargs,
        )

        plan = self._plan()
        resume = self._begin_stage("rl")
        adapter = self.store.artifacts / "sft_adapter"
        model = self._policy(adapter if self.model is None and adapter.is_dir() else None)
        box = StatsBox()
        versions = PolicyVersions()
        prm = self._make_prm()
        reward = GraderReward(
            self.grader,
            box,
            num_generations=plan.num_generations,
            prm=prm,
            alpha=self.ext.prm.alpha if prm is not None else 1.0,
        )
        data = Dataset.from_list(
            [{"prompt": self.prompt_for(r), "item_json": json.dumps(r.item), "uid": r.uid} for r in rows]
        )
        vllm = None
        if plan.rollout_engine == "vllm":
            vllm = vllm_kwargs(
                mode=self.ext.rl.vllm_mode,
                server_base_url=self.ext.rl.vllm_server_base_url,
                gpu_memory_utilization=self.ext.rl.vllm_gpu_memory_utilization,
                max_model_length=None,
            )
        args = grpo_args(
            output_dir=str(self.workdir / "hf" / "rl"),
            batch_size=plan.rl_batch_size,
            num_generations=plan.num_generations,
            learning_rate=plan.rl_learning_rate,
            max_steps=plan.rl_max_steps,
            max_completion_length=plan.max_completion_length,
            temperature=self.rl_temperature,
            beta=self.ext.rl.beta,
            loss_type=self.ext.rl.loss_type,
            seed=self.spec.seed,
            use_cpu=self.use_cpu,
            vllm=vllm,
            model_config=model.config,
        )
        from trainer.watch import RLWatch

        early = self.ext.rl.early_stop
        self.watch = RLWatch(
            flat_patience=3 if early else 10**9, eval_patience=(self.ext.rl.patience if early else 0) or 10**9
        )
        cb = StageCallback(self, "rl", offset=offset, eval_every=plan.eval_interval, supervised=False)
        cb.stats_box = box
        cb.versions = versions
        self.trainer = make_grpo_trainer(
            model=model,
            reward_funcs=[reward],
            args=args,
            train_dataset=data,
            processing_class=self.tokenizer,
            callbacks=[cb],
            stats_box=box,
            policy_versions=versions,
        )
        self.sink.message(
            f"RL (GRPO): {plan.rl_max_steps} steps, {plan.rl_batch_size} prompts x {plan.num_generations} rollouts "
            f"per step, max {plan.max_completion_length} new tokens, lr {plan.rl_learning_rate:g}, "
            f"rollouts by {plan.rollout_engine}"
            + (f", process reward: {self.ext.prm.type}" if prm else "")
            + (f" (resuming at step {offset + self.state.trainer_step['rl']})" if resume else "")
        )
        with self.stopper.watch_forward(model):
            self.trainer.train(resume_from_checkpoint=resume)
        self.model = self.trainer.model
        self.trainer = None
        self.store.clear_trainer()
        if cb.stop_now:  # ended early: the plan shrinks to the steps that ran
            self._shrink_plan(self.state.global_step, "RL ended early")
        self._mark_done("rl")

    def _make_prm(self) -> Any:
        if self.ext.prm.type == "none":
            return None
        from trainer.prm import make_process_reward

        return make_process_reward(self)

    # -- per step -------------------------------------------------------------------------------------------

    def after_step(self, cb: StageCallback, local_step: int, logs: dict[str, Any]) -> None:
        """Called once per optimizer step (from the trainer's log callback): eval, checkpoint, report, stop."""
        trainer = self.trainer
        gstep = cb.offset + local_step
        now = time.perf_counter()
        rec: dict[str, Any] = {
            "step": gstep,
            "stage": cb.stage,
            "train_loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "full_iteration_s": now - cb.step_started,
        }
        if cb.stats_box is not None:
            stats = cb.stats_box.pop()
            rec.update(stats.summary())
            self.rollouts.record(gstep, cb.stage, stats.samples)
            rec["rollouts"] = preview(stats.samples)
            self._act(
                cb,
                self.watch.on_step(
                    frac_flat=rec.get("frac_reward_zero_std"),
                    errors=rec.get("grader_error_counts") or {},
                    samples=len(stats.outcome),
                ),
            )
        rec["training_s"] = max(
            0.0, rec["full_iteration_s"] - (rec.get("sampling_s") or 0) - (rec.get("grading_s") or 0)
        )
        self._step_times.append(rec["full_iteration_s"])
        last = local_step >= trainer.state.max_steps or cb.stop_now
        due = cb.eval_every is not None and local_step % cb.eval_every == 0
        if last or due:
            t0 = time.perf_counter()
            if cb.supervised:
                if trainer.eval_dataset is not None:
                    with self.stopper.hold():
                        metrics = trainer.evaluate()
                    rec["valid_loss"] = metrics.get("eval_loss")
            elif self.val_rows:
                rec.update(self._evaluate(trainer.model))
                if cb.stage == "rl" and not cb.stop_now:
                    best = self.ckpts.best()
                    prior = best.metrics.get("full_valid_mean_reward") if best is not None else None
                    improved = prior is None or rec["full_valid_mean_reward"] > float(prior) + 1e-9
                    self._act(cb, [] if last else self.watch.on_eval(improved=improved))
            rec["eval_s"] = time.perf_counter() - t0
            rec["full_iteration_s"] += rec["eval_s"]
            with self.stopper.hold():
                self.ckpts.save(gstep, trainer.model.save_pretrained, self._ckpt_metrics(rec))
                self.store.save_trainer(trainer)
                self.state.trainer_step[cb.stage] = local_step
        elif cb.stage == "sft" and local_step % max(1, trainer.state.max_steps // 4) == 0:
            with self.stopper.hold():  # a resume point for killed workers between evaluations
                self.store.save_trainer(trainer)
                self.state.trainer_step[cb.stage] = local_step
        self.state.global_step = gstep
        if logs.get("num_tokens") is not None:
            self.state.counters[f"{cb.stage}_tokens"] = int(float(logs["num_tokens"]))
        self.reporter.step(rec)
        self.save_state()
        self._update_estimate(gstep, rec)
        cb.step_started = time.perf_counter()
        self.stopper.check(budget=True)

    def _act(self, cb: StageCallback, verdicts: list[Any]) -> None:
        """Carry out the RL watch's verdicts: a warning event, a failed job, or the stage ended early."""
        for v in verdicts:
            if v.action == "fail":
                raise TrainerError(v.message, code=v.code or "training_error")
            self.sink.message(v.message, level="warn")
            if v.action == "stop":
                cb.stop_now = True

    def _ckpt_metrics(self, rec: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "step",
            "train_loss",
            "train_mean_reward",
            "full_valid_mean_reward",
            "full_valid_accuracy",
            "valid_loss",
        )
        return {k: rec[k] for k in keys if rec.get(k) is not None}

    def _update_estimate(self, gstep: int, rec: dict[str, Any]) -> None:
        if not self._step_times:
            return
        recent = self._step_times[-5:]
        per_step = sum(recent) / len(recent)
        left = max(0, self.state.total_steps - gstep) * per_step
        self.reporter.estimate(seconds_left=left, step=gstep)

    def _evaluate(self, model: Any) -> dict[str, Any]:
        from trainer.evaluation import evaluate

        plan = self._plan()
        res = evaluate(
            model,
            self.tokenizer,
            [self.prompt_for(r) for r in self.val_rows],
            [r.item for r in self.val_rows],
            self.grader,
            samples=plan.eval_samples,
            temperature=plan.eval_temperature,
            max_new_tokens=plan.max_completion_length,
            stopper=self.stopper,
        )
        from trainer.watch import wilson_interval

        self._check_grader_errors(res.grader_errors, res.n_samples, "the validation evaluation")
        out: dict[str, Any] = {
            "full_valid_mean_reward": res.mean_reward,
            "full_valid_accuracy": res.accuracy,
            # Over questions, not samples: a question's samples are not independent draws of the model.
            "full_valid_accuracy_ci": list(wilson_interval(res.accuracy * res.n_questions, res.n_questions)),
            "valid_completion_tokens_mean": res.completion_tokens_mean,
        }
        if res.grader_errors:
            out["grader_error_counts"] = res.grader_errors
        return out

    def _mark_done(self, stage: str) -> None:
        if stage not in self.state.done:
            self.state.done.append(stage)
        self.state.trainer_step.pop(stage, None)
        if self.state.stage == stage:
            self.state.stage = None
        self.save_state()

    # -- end of run -----------------------------------------------------------------------------------------

    def _finish(self) -> JobResult:
        best = self.ckpts.best()
        final = self.workdir / "final" / "adapter"
        if best is not None:
            atomic_dir(final, lambda tmp: shutil.copytree(best.path, tmp, dirs_exist_ok=True))
            self.sink.message(
                f"Final model: checkpoint of step {best.step} ({self._describe(best.metrics)})."
            )
            self._compare_with_base(best.metrics)
        elif self.model is not None:
            atomic_dir(final, lambda tmp: self.model.save_pretrained(str(tmp)))
        else:
            raise TrainerError("Nothing was trained.", code="training_error")
        self.tokenizer.save_pretrained(str(final)) if not (final / "tokenizer_config.json").exists() else None
        model_dir = final
        if self.ext.merge_weights:
            model_dir = self._merge(final)
        csv_path = self.reporter.write_csv()
        self.state.stage = "done"
        self.save_state()
        tokens = sum(int(v) for k, v in self.state.counters.items() if k.endswith("_tokens"))
        return JobResult(
            status="succeeded",
            model_dir=model_dir,
            result_file=csv_path,
            rollouts_file=self.rollouts.file(),
            trained_tokens=tokens,
            checkpoints=list(self.ckpts.kept),
        )

    def _compare_with_base(self, metrics: dict[str, Any]) -> None:
        """Say so when the fine-tuned model is no better than the base model on validation (step 0)."""
        base = next((r for r in self.reporter.rows if r.get("stage") == "baseline"), None)
        tuned = metrics.get("full_valid_mean_reward")
        if base is None or base.get("full_valid_mean_reward") in (None, "") or tuned is None:
            return
        before = float(base["full_valid_mean_reward"])
        if float(tuned) < before:
            self.sink.message(
                f"The fine-tuned model scores below the base model on validation (mean reward {float(tuned):.3f} "
                f"against {before:.3f} before training): training did not teach this task at this budget. The base "
                "model stays available; worked solutions in the rows (an explanation field), more rows, or a larger "
                "base model are the levers.",
                level="warn",
            )

    def _merge(self, adapter_dir: Path) -> Path:
        from peft import PeftModel

        from trainer.lora import merge_and_save
        from trainer.models import load_model

        base = load_model(self.model_dir)
        peft = PeftModel.from_pretrained(base, str(adapter_dir))
        out = self.workdir / "final" / "merged"
        atomic_dir(out, lambda tmp: merge_and_save(peft, self.tokenizer, tmp))
        self.sink.message("Merged the adapter into full weights.")
        return out

    @staticmethod
    def _describe(metrics: dict[str, Any]) -> str:
        parts = [f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)]
        return ", ".join(parts) or "no metrics"

    def _stopped(self, stop: StopRequested) -> JobResult:
        step = self.state.global_step
        if stop.kind == "cancel":
            self.sink.message(f"Cancelled at step {step}; nothing more is written.")
            return JobResult(
                status="cancelled", result_file=self.reporter.write_csv(), checkpoints=list(self.ckpts.kept)
            )
        if self.trainer is not None and self.stage is not None:
            self.store.save_trainer(self.trainer)
            self.state.trainer_step[self.stage] = int(self.trainer.state.global_step)
        self.save_state()
        where = self.state.trainer_step.get(self.stage or "", None)
        at = (self.state.stage_offsets.get(self.stage or "", 0) + where) if where is not None else step
        self.sink.message(
            f"Paused at step {at} ({stop.reason}); a resumable snapshot is saved.", level="info"
        )
        return JobResult(
            status="paused",
            snapshot_dir=self.store.root,
            result_file=self.reporter.write_csv(),
            checkpoints=list(self.ckpts.kept),
        )


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class StageCallback(_callback_base()):  # type: ignore[misc]
    """Bridges HF Trainer events to the pipeline: one ``after_step`` per optimizer step."""

    def __init__(
        self, pipeline: Pipeline, stage: str, *, offset: int, eval_every: int | None, supervised: bool
    ) -> None:
        self.pipeline = pipeline
        self.stage = stage
        self.offset = offset
        self.eval_every = eval_every
        self.supervised = supervised
        self.stats_box: Any = None
        self.versions: Any = None
        self.step_started = time.perf_counter()
        self._pending: int | None = None
        self.stop_now = False
        """Set by the pipeline to end the stage after this step (checkpointed like a last step)."""

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
            self.pipeline.after_step(self, step, logs)
            if self.stop_now:
                control.should_training_stop = True
