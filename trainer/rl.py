"""The RL stage: TRL's GRPOTrainer with LoRA, reward = the job's grader (+ alpha x process reward).

What this adds to TRL: the grader reward with per-step statistics (zero-signal groups, grader errors, grading
time), rollout timing, and policy freshness: every rollout batch is tagged with the version of the weights it
was sampled from, and ``policy_lag`` = (updates applied when the batch is trained on) - (that version).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.lora import trainable_fingerprint
from trainer.rollouts import group_samples
from trainer.watch import PROCESS_REWARD_ERROR

if TYPE_CHECKING:
    from trainer.curriculum import PromptStats
    from trainer.grading import Grader
    from trainer.prm import ProcessReward


@dataclass
class StepStats:
    """What the reward function and the rollout hook saw during one optimizer step."""

    rewards: list[float] = field(default_factory=list)
    outcome: list[float] = field(default_factory=list)
    process: list[float] = field(default_factory=list)
    groups: int = 0
    zero_std_groups: int = 0
    grader_errors: dict[str, int] = field(default_factory=dict)
    process_reward_error: str | None = None
    """The last failure of the process reward model in this step (counted in ``grader_errors``)."""
    grading_s: float = 0.0
    sampling_s: float = 0.0
    prm_s: float = 0.0
    completion_tokens: list[int] = field(default_factory=list)
    rollout_versions: list[int] = field(default_factory=list)
    policy_lags: list[int] = field(default_factory=list)
    grader_usage: dict[str, dict[str, int]] = field(default_factory=dict)
    prompts_deferred: int | None = None
    """Dynamic sampling: prompts passed over so far because their last group was flat (trainer.curriculum)."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """The step's first group of completions with their rewards (rollouts.jsonl); not in the summary."""

    def summary(self) -> dict[str, Any]:
        mean = statistics.fmean
        return {
            "train_mean_reward": mean(self.rewards) if self.rewards else None,
            "train_outcome_reward": mean(self.outcome) if self.outcome else None,
            "train_process_reward": mean(self.process) if self.process else None,
            "graded_samples": len(self.outcome),
            "frac_reward_zero_std": self.zero_std_groups / self.groups if self.groups else None,
            "grader_error_counts": dict(self.grader_errors),
            "process_reward_error": self.process_reward_error,
            "grading_s": self.grading_s + self.prm_s,
            "sampling_s": self.sampling_s,
            "completion_tokens_mean": mean(self.completion_tokens) if self.completion_tokens else None,
            "policy_lag": max(self.policy_lags) if self.policy_lags else None,
            "rollout_version": max(self.rollout_versions) if self.rollout_versions else None,
            "grader_usage": self.grader_usage or None,
            "prompts_deferred": self.prompts_deferred,
        }


def merge_stats(parts: list[StepStats]) -> StepStats:
    """One step's statistics from every rank's share (each rank grades its own groups): samples and counts
    add up, times are the slowest rank's (the ranks work in parallel), rollouts.jsonl keeps rank 0's group."""
    if len(parts) == 1:
        return parts[0]
    out = StepStats(samples=next((p.samples for p in parts if p.samples), []))
    for p in parts:
        for name in ("rewards", "outcome", "process", "completion_tokens", "rollout_versions", "policy_lags"):
            getattr(out, name).extend(getattr(p, name))
        out.groups += p.groups
        out.zero_std_groups += p.zero_std_groups
        for k, v in p.grader_errors.items():
            out.grader_errors[k] = out.grader_errors.get(k, 0) + v
        for model, counts in p.grader_usage.items():
            mine = out.grader_usage.setdefault(model, {})
            for k, v in counts.items():
                mine[k] = mine.get(k, 0) + v
        out.process_reward_error = p.process_reward_error or out.process_reward_error
        out.prompts_deferred = p.prompts_deferred if p.prompts_deferred is not None else out.prompts_deferred
        out.grading_s = max(out.grading_s, p.grading_s)
        out.sampling_s = max(out.sampling_s, p.sampling_s)
        out.prm_s = max(out.prm_s, p.prm_s)
    return out


class StatsBox:
    """Shared between the reward function and the trainer; the pipeline pops one StepStats per step."""

    def __init__(self) -> None:
        self.current = StepStats()

    def pop(self) -> StepStats:
        out, self.current = self.current, StepStats()
        return out


class GraderReward:
    """A TRL reward function: ``(prompts, completions, **columns) -> rewards``, one per completion."""

    __name__ = "grader"

    def __init__(
        self,
        grader: Grader,
        box: StatsBox,
        *,
        num_generations: int,
        prm: ProcessReward | None = None,
        alpha: float = 1.0,
        curriculum: PromptStats | None = None,
    ) -> None:
        self.grader = grader
        self.box = box
        self.num_generations = num_generations
        self.prm = prm
        self.alpha = alpha
        self.curriculum = curriculum

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        items = [json.loads(s) for s in columns["item_json"]]
        grades = self.grader.grade(texts, items)
        outcome = grades.scores
        st = self.box.current
        st.grading_s += grades.seconds
        for k, v in grades.errors.items():
            st.grader_errors[k] = st.grader_errors.get(k, 0) + v
        for model, counts in grades.token_usage.items():  # model graders: tokens per judge model
            mine = st.grader_usage.setdefault(model, {})
            for key, n in (counts or {}).items():
                mine[key] = mine.get(key, 0) + int(n)
        rewards = list(outcome)
        process: list[float] | None = None
        if self.prm is not None:
            t0, failed = time.perf_counter(), self.prm.errors
            process = self.prm.score(prompts, texts)
            st.prm_s += time.perf_counter() - t0
            failed = self.prm.errors - failed
            if failed:  # counted like grader errors: the RL watch warns, then fails the job
                st.grader_errors[PROCESS_REWARD_ERROR] = (
                    st.grader_errors.get(PROCESS_REWARD_ERROR, 0) + failed
                )
                st.process_reward_error = self.prm.last_error
            rewards = [self.alpha * o + (1 - self.alpha) * p for o, p in zip(outcome, process, strict=True)]
            st.process.extend(process)
        st.outcome.extend(outcome)
        st.rewards.extend(rewards)
        g = self.num_generations
        if not st.samples and len(texts) >= g:
            st.samples = group_samples(
                prompts[0], texts[:g], outcome[:g], process[:g] if process is not None else None, rewards[:g]
            )
        # TRL orders completions group by group (num_generations consecutive completions per prompt).
        for i in range(0, len(rewards) - g + 1, g):
            group = rewards[i : i + g]
            st.groups += 1
            st.zero_std_groups += int(max(group) - min(group) < 1e-9)
            if self.curriculum is not None and "uid" in columns:
                passed = [self.grader.correct(o) for o in outcome[i : i + g]]
                self.curriculum.record(str(columns["uid"][i]), group, passed=passed)
        if self.curriculum is not None:
            st.prompts_deferred = self.curriculum.skipped
        return rewards


class PolicyVersions:
    """Maps weight fingerprints to the number of optimizer updates that produced them."""

    def __init__(self) -> None:
        self.by_fingerprint: dict[float, int] = {}

    def register(self, model: Any, version: int) -> None:
        self.by_fingerprint[trainable_fingerprint(model)] = version

    def version_of(self, model: Any) -> int | None:
        return self.by_fingerprint.get(trainable_fingerprint(model))


def make_grpo_trainer(**kwargs: Any) -> Any:
    """Build the GRPO trainer (a subclass created lazily, so importing this module does not import TRL)."""
    from trl import GRPOTrainer

    box: StatsBox = kwargs.pop("stats_box")
    versions: PolicyVersions = kwargs.pop("policy_versions")
    curriculum: PromptStats | None = kwargs.pop("curriculum", None)

    class OpenRFTGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that times rollouts and tags each rollout batch with its policy version."""

        _rollout_version: int | None = None

        def _get_train_sampler(self, dataset: Any = None) -> Any:
            if curriculum is None:
                return super()._get_train_sampler(dataset)
            from trainer.curriculum import curriculum_sampler

            data: Any = self.train_dataset if dataset is None else dataset
            args: Any = self.args  # a GRPOConfig
            groups = int(self.num_generations or 1)
            return curriculum_sampler(
                [str(u) for u in data["uid"]],
                curriculum,
                mini_repeat_count=groups,
                batch_size=args.generation_batch_size // groups,
                repeat_count=self.num_iterations * args.steps_per_generation,
                seed=args.seed,
            )

        def _generate_single_turn(self, *args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            out = super()._generate_single_turn(*args, **kw)
            box.current.sampling_s += time.perf_counter() - t0
            if self.use_vllm:
                # TRL syncs the LoRA weights into vLLM when global_step moved; the engine now holds that step.
                self._rollout_version = int(self._last_loaded_step)
            else:
                # The rollouts came from the module being trained: identify its weights by fingerprint.
                v = versions.version_of(self.model)
                self._rollout_version = -1 if v is None else v
            box.current.rollout_versions.append(self._rollout_version)
            completion_ids = out[0]
            box.current.completion_tokens.extend(len(c) for c in completion_ids)
            return out

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self._rollout_version is not None:
                # global_step counts the updates applied so far, i.e. the version being trained on now.
                lag = self.state.global_step - self._rollout_version if self._rollout_version >= 0 else -1
                box.current.policy_lags.append(lag)
            return loss

    trainer = OpenRFTGRPOTrainer(**kwargs)
    from trainer.sft import _drop_printer

    _drop_printer(trainer)
    return trainer


def grpo_args(
    *,
    output_dir: str,
    batch_size: int,
    num_generations: int,
    learning_rate: float,
    max_steps: int,
    max_completion_length: int,
    temperature: float,
    beta: float,
    loss_type: str,
    seed: int,
    use_cpu: bool,
    vllm: dict[str, Any] | None = None,
    model_config: Any = None,
    prompt_tokens: int = 512,
    world_size: int = 1,
    strategy: dict[str, Any] | None = None,
) -> Any:
    """GRPOConfig for one RL stage; ``batch_size`` counts prompts (each gets ``num_generations`` rollouts).

    On a GPU the batch's sequences are split into micro-batches that fit (``trainer.device``); TRL then
    generates the whole batch once per optimizer step (its steps_per_generation defaults to the accumulation).
    Under a launch of ``world_size`` ranks the batch is global: each rank takes its share; ``strategy``: the
    TrainingArguments fields of the sharding strategy."""
    from trl import GRPOConfig

    from trainer.device import Device, detect, micro_batches
    from trainer.distributed import World, per_rank

    device = detect() if not use_cpu else Device("cpu")
    total = batch_size * num_generations
    if world_size > 1:  # each rank generates, grades and trains on its share of the step's completions
        total = per_rank(total, World(world_size=world_size), what="batch_size x num_generations")
    micro, accum = micro_batches(
        total, tokens=prompt_tokens + max_completion_length, config=model_config, device=device
    )
    return GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=micro,
        num_generations=num_generations,
        gradient_accumulation_steps=accum,
        learning_rate=learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0,
        max_steps=max_steps,
        max_completion_length=max_completion_length,
        temperature=temperature,
        beta=beta,
        loss_type=loss_type,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=use_cpu,
        bf16=device.bf16,
        fp16=device.fp16,
        activation_checkpointing=not use_cpu,
        disable_tqdm=True,
        shuffle_dataset=True,
        mask_truncated_completions=False,
        **(vllm or {}),
        **(strategy or {}),
    )


def vllm_kwargs(
    *,
    mode: str,
    server_base_url: str | None,
    gpu_memory_utilization: float,
    max_model_length: int | None,
    tensor_parallel_size: int = 1,
    group_port: int | None = None,
) -> dict[str, Any]:
    """GRPOConfig fields for TRL's vLLM rollouts.

    colocate: vLLM runs inside the trainer process and shares the GPU (sleep mode frees its memory during the
    optimizer step); server: rollouts go to a ``trl vllm-serve`` process and weights are pushed to it over
    NCCL after every update (TRL syncs when ``global_step`` changed, so rollouts are never a step stale).
    """
    kw: dict[str, Any] = {"use_vllm": True, "vllm_mode": mode}
    if mode == "colocate":
        kw.update(
            vllm_gpu_memory_utilization=gpu_memory_utilization,
            vllm_enable_sleep_mode=True,
            vllm_tensor_parallel_size=tensor_parallel_size,
        )
        if max_model_length:
            kw["vllm_max_model_length"] = max_model_length
    elif mode == "server":
        if not server_base_url:
            raise ValueError("vLLM server mode needs a server base URL")
        kw["vllm_server_base_url"] = server_base_url.rstrip("/")
        if group_port:
            kw["vllm_group_port"] = group_port
    else:
        raise ValueError(f"unknown vLLM mode {mode!r}")
    return kw
