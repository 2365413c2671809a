"""Job configuration: OpenAI hyperparameters, the OpenRFT extension object, validation and "auto" rules.

Torch-free: the API imports :func:`resolve_config` at job creation to answer bad input with a 400 that names
the field. The worker parses the same objects and resolves every "auto" once, at run time, where the hardware
and the dataset size are known (:func:`plan_run`).

The extension travels in the job body as a top-level ``"openrft": {...}`` object (the OpenAI SDK sends it with
``extra_body``). Every stage of the method is a switch, so the paper's ablation rows are plain configurations:

=====================  ==========================================================================
Vanilla                ``sft.enabled=false, rl.enabled=false`` (evaluation only, see bench/quality)
RL / RL+PRM            ``sft.enabled=false`` / plus ``prm.type="self"`` (or "hf", "endpoint")
SFT                    ``rl.enabled=false``
SFT+RL(PRM)            defaults plus a ``prm``
+DA                    ``augmentation.enabled=true``
+ICL                   ``icl_k=3``
=====================  ==========================================================================

"auto" rules (documented here, applied in :func:`plan_run`):

- ``batch_size`` (prompts per RL step): 2 on CPU, 8 on GPU; SFT: 4 on CPU, 8 on GPU (paper).
- ``learning_rate_multiplier``: 1.0 times the base rate, 2e-4 for LoRA SFT (CPU) / 5e-5 (GPU, paper); LoRA GRPO
  on CPU 2e-4 from a fresh adapter (RL from the base: tens of steps must move the policy) and 5e-5 when it
  continues the SFT adapter (2e-4 undid SFT within 4 steps on a binary task: bench/results/quality.md), 3e-5 on
  GPU (the paper's actor rate). ``rl.temperature``: 0.8 on CPU, 1.0 on GPU.
- ``n_epochs``: SFT 3 on CPU, 8 on GPU (paper); RL 3 on CPU, 6 on GPU (the paper's episodes). On CPU the RL
  step count is also capped at ``120 * compute_multiplier`` steps. RL follows its signal: it ends earlier when
  ``rl.patience`` evaluations in a row do not beat its best (its start included), and on CPU after
  ``rl.time_budget_minutes`` (12 by default), so it goes on only while validation keeps improving.
- ``compute_multiplier``: scales the RL step budget and the rollouts per prompt (``num_generations``,
  4 on CPU, 8 on GPU, before scaling; at least 2).
- ``reasoning_effort`` is the generation budget (max new tokens): CPU low/default/medium/high = 64/128/128/256,
  GPU 512/1024/1024/1536 (the paper's 1536 at high).
- ``eval_interval``: about 4 evaluations per epoch of RL (at least every step, at most every 50); ``eval_samples``: 1
  with greedy evaluation, 3 with the paper's protocol (temperature 0.6).
- ``sft.samples_per_question`` (rejection-sampling tries of a row with a reference answer): 2 on CPU, 16 on GPU
  (the paper uses 64); ``sft.samples_without_reference`` (rows with none, best-of-k: tries per question on
  average, at most twice that on one): 8 on CPU, 64 on GPU.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Auto = Literal["auto"]


class ConfigError(ValueError):
    """Invalid job configuration; ``param`` is the dotted path of the offending field in the job body."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------------------------------------------
# OpenAI hyperparameters
# ---------------------------------------------------------------------------------------------------------------


class SupervisedHyperparameters(_Strict):
    """OpenAI's supervised hyperparameters."""

    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = Field(
        default="auto", description="Examples per optimizer step."
    )
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = Field(
        default="auto", description="Multiplies the base LoRA learning rate."
    )
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = Field(
        default="auto", description="Passes over the training file."
    )


class ReinforcementHyperparameters(SupervisedHyperparameters):
    """OpenAI's reinforcement hyperparameters (``batch_size`` counts prompts; each gets a group of rollouts)."""

    reasoning_effort: Literal["default", "low", "medium", "high", "auto"] = Field(
        default="default",
        description="Generation budget: maximum new tokens per rollout (see the auto rules).",
    )
    compute_multiplier: Auto | Annotated[float, Field(gt=0.00001, le=10)] = Field(
        default="auto", description="Scales the RL step budget and the number of rollouts per prompt."
    )
    eval_interval: Auto | Annotated[int, Field(ge=1)] = Field(
        default="auto", description="Evaluate (and checkpoint) every this many RL steps."
    )
    eval_samples: Auto | Annotated[int, Field(ge=1, le=16)] = Field(
        default="auto", description="Samples per validation question (their grades are averaged)."
    )


# ---------------------------------------------------------------------------------------------------------------
# The OpenRFT extension object
# ---------------------------------------------------------------------------------------------------------------


class Endpoint(_Strict):
    """An OpenAI-compatible chat completions endpoint (a teacher, judge or verifier)."""

    base_url: str = Field(description="Base URL ending in /v1, e.g. http://vllm:8000/v1.")
    model: str = Field(description="Model name to send in the request.")
    api_key: str | None = Field(default=None, description="Bearer token, if the endpoint needs one.")
    timeout: float = Field(default=120.0, gt=0, description="Seconds per request.")

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


Teacher = Literal["policy"] | Endpoint


class AugmentationConfig(_Strict):
    """Question augmentation: paraphrases of each question stem plus shuffled, relabelled options."""

    enabled: bool = Field(default=False, description="Add augmented variants of each training row to RL.")
    n_variants: Annotated[int, Field(ge=1, le=20)] = Field(
        default=5, description="Variants per question (the paper asks for 5 distinct expressions)."
    )
    teacher: Teacher = Field(
        default="policy", description='"policy" (the base model) or an endpoint that writes the paraphrases.'
    )
    paraphrase: bool = Field(
        default=True,
        description="Rewrite the stem with the teacher. False: variants only shuffle the options.",
    )
    shuffle_options: bool = Field(
        default=True, description="For multiple-choice rows, shuffle the options and relabel the answer."
    )
    max_new_tokens: Annotated[int, Field(ge=16, le=4096)] = Field(
        default=256, description="Generation budget of one paraphrase request."
    )


class SFTConfig(_Strict):
    """Reasoning synthesis by rejection sampling, then LoRA SFT on the kept traces (the paper's imitation stage)."""

    enabled: bool = Field(default=True, description="Run the SFT warm-up before RL.")
    samples_per_question: Auto | Annotated[int, Field(ge=0, le=256)] = Field(
        default="auto",
        description="Tries per question with a reference answer until a trace is graded correct (paper: 64). "
        "0: no sampling, train on reference-answer responses only.",
    )
    samples_without_reference: Auto | Annotated[int, Field(ge=0, le=256)] = Field(
        default="auto",
        description="Tries per question with no reference answer (the grader alone knows what is right), on "
        "average: best-of-k rounds give the questions still unsolved more tries (at most twice this on one) while "
        "the rounds keep solving questions. Under a partial-credit grader a question none solved keeps its best "
        "try when it beats the mean of its tries.",
    )
    fallback_to_reference: bool = Field(
        default=True,
        description="When no try is correct, train on the reference answer with a short worked reasoning.",
    )
    teacher: Teacher = Field(default="policy", description='"policy" (paper default) or an endpoint.')
    temperature: Annotated[float, Field(gt=0, le=2)] = Field(
        default=0.8, description="Sampling temperature of the synthesis tries."
    )
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = Field(default="auto", description="SFT epochs.")
    learning_rate: Auto | Annotated[float, Field(gt=0, le=1)] = Field(
        default="auto", description="SFT learning rate (before learning_rate_multiplier)."
    )
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = Field(
        default="auto", description="SFT batch size."
    )
    max_length: Annotated[int, Field(ge=64, le=32768)] = Field(
        default=2048, description="Longest training sequence in tokens (paper: 2048)."
    )


class RLConfig(_Strict):
    """GRPO with LoRA; reward = grader (+ alpha-weighted process reward)."""

    enabled: bool = Field(default=True, description="Run the RL stage.")
    algorithm: str = Field(
        default="grpo",
        description="The RL algorithm, one module of trainer/algorithms each: grpo (TRL's GRPOTrainer).",
    )
    num_generations: Auto | Annotated[int, Field(ge=2, le=64)] = Field(
        default="auto", description="Rollouts per prompt (the GRPO group size)."
    )
    max_steps: Auto | Annotated[int, Field(ge=1, le=100000)] = Field(
        default="auto", description="RL optimizer steps; auto from n_epochs, batch_size and the budget."
    )
    learning_rate: Auto | Annotated[float, Field(gt=0, le=1)] = Field(
        default="auto", description="RL learning rate (before learning_rate_multiplier)."
    )
    temperature: Auto | Annotated[float, Field(gt=0, le=2)] = Field(
        default="auto",
        description="Rollout temperature. auto: 0.8 on a CPU (a small model's samples at 1.0 "
        "are mostly noise), 1.0 on a GPU.",
    )
    beta: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.0, description="KL coefficient to the reference policy (0 skips the reference model)."
    )
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        default="dapo", description="TRL GRPO loss normalization."
    )
    rollout_engine: Literal["auto", "transformers", "vllm"] = Field(
        default="auto", description="auto: vLLM when a GPU and vLLM are present, else transformers."
    )
    vllm_mode: Literal["auto", "colocate", "server"] = Field(
        default="auto",
        description="TRL vLLM mode: colocate (vLLM inside every training process, sharing its GPU) or server (a "
        "trl vllm-serve server at vllm_server_base_url). auto: colocate, unless that does not fit the GPUs' memory "
        "and the job has 2 or more: then a server on a GPU of its own, training on the others.",
    )
    vllm_server_base_url: str | None = Field(default=None, description="Server mode: the trl vllm-serve URL.")
    vllm_group_port: Annotated[int, Field(gt=0, lt=65536)] | None = Field(
        default=None,
        description="Server mode: the port on the training node where the weight-sync NCCL group meets the server "
        "(TRL's vllm_group_port; default TRL's 51216). A server the launcher starts gets a free one, so two jobs on "
        "one machine never share it.",
    )
    vllm_gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.3, description="Colocate mode: GPU memory share for vLLM."
    )
    dynamic_sampling: bool = Field(
        default=True,
        description="A prompt whose last group of rollouts all scored alike (no gradient) gives its place in the "
        "next batches to prompts with reward spread, within the same rollout budget (DAPO's dynamic sampling; one "
        "training process only).",
    )
    probe_prompts: Annotated[int, Field(ge=0, le=256)] = Field(
        default=8,
        description="Before RL, sample a group of rollouts for this many training prompts and measure the share "
        "of groups whose rewards all agree (no gradient); adapt or skip RL when it cannot learn. 0: no probe.",
    )
    early_stop: bool = Field(
        default=True,
        description="End RL early when it cannot learn: skip it when the probe finds no reward spread, stop "
        "after 3 steps whose groups all scored alike, or after `patience` evaluations without a new best "
        "(the best checkpoint is kept). False: report these, run every step.",
    )
    time_budget_minutes: Auto | Annotated[float, Field(gt=0)] | None = Field(
        default="auto",
        description="RL ends (its best checkpoint kept) once the stage has run this long. auto: 12 minutes on a "
        "CPU, none on a GPU (steps and patience bound it there); null: none.",
    )
    patience: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=2,
        description="End RL when this many evaluations in a row do not beat its best so far (the validation "
        "reward of the model it started from included; 0: never).",
    )

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, v: str) -> str:
        from trainer.algorithms import names

        if v not in names():
            raise ValueError(f"unknown RL algorithm; available: {', '.join(names())}")
        return v


class PRMConfig(_Strict):
    """Process reward: scores reasoning steps (split on blank lines), combined as alpha*outcome+(1-alpha)*process."""

    type: Literal["none", "hf", "endpoint", "self"] = Field(
        default="none",
        description="none; hf (a Hugging Face PRM path, Skywork-o1-Open-PRM style); endpoint (an OpenAI-compatible "
        "model used as step judge); self (the policy itself as a generative verifier).",
    )
    path: str | None = Field(default=None, description="type=hf: local path or Hugging Face id of the PRM.")
    base_url: str | None = Field(default=None, description="type=endpoint: OpenAI-compatible base URL.")
    model: str | None = Field(default=None, description="type=endpoint: model name.")
    api_key: str | None = Field(default=None, description="type=endpoint: bearer token.")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.7, description="Weight of the outcome (grader) reward; the PRM gets 1 - alpha (paper: 0.7)."
    )
    aggregate: Literal["mean", "min", "last"] = Field(default="mean", description="How step scores combine.")
    step_separator: str = Field(default="\n\n", min_length=1, description="Splits a completion into steps.")
    max_steps: Annotated[int, Field(ge=1, le=64)] = Field(
        default=8, description="Score at most this many steps per completion (the last ones are merged)."
    )


class EvalConfig(_Strict):
    """Evaluation on the validation file."""

    protocol: Literal["greedy", "paper"] = Field(
        default="greedy", description="greedy (fast) or paper (temperature 0.6, mean of 3 samples)."
    )
    temperature: Annotated[float, Field(ge=0, le=2)] | None = Field(
        default=None, description="Overrides the protocol's temperature."
    )
    max_samples: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Evaluate on at most this many validation rows (first N)."
    )
    pass_threshold: float | None = Field(
        default=None,
        description="A sample counts as correct (accuracy, rejection sampling) when its grade is at least "
        "this. Default: the grader's own pass threshold (its maximum score unless the grader sets one).",
    )
    at_start: bool = Field(default=True, description="Also evaluate the model before training (step 0).")
    holdout: Auto | Annotated[int, Field(ge=0, le=10000)] = Field(
        default="auto",
        description="Training rows kept out of training to choose checkpoints with, besides the validation file. "
        "auto: with fewer than 40 validation rows, enough to make 40, at most a fifth of the training rows "
        "(checkpoint choice on 20 rows is mostly noise). 0: none.",
    )


class DistributedConfig(_Strict):
    """One job on several processes (trainer/distributed.py): data-parallel SFT and RL through accelerate."""

    processes: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="Training processes on this machine: one per GPU on CUDA (NCCL); on the CPU, N processes "
        "with the gloo backend sharing its cores. Batch sizes stay global: each process trains 1/N of a batch.",
    )
    strategy: Literal["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"] = Field(
        default="ddp",
        description="ddp: every process holds the model (LoRA, the default). deepspeed_zero2 / deepspeed_zero3 / "
        "fsdp shard optimizer state, gradients (and parameters, zero3 and fsdp) over the GPUs, for full "
        "fine-tuning of large models; GPU only.",
    )


class OpenRFTConfig(_Strict):
    """The OpenRFT extension object ("openrft" in the job body)."""

    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    prm: PRMConfig = Field(default_factory=PRMConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    icl_k: Annotated[int, Field(ge=0, le=16)] = Field(
        default=0,
        description="Few-shot ICL: put the k most similar training samples in every prompt (paper: 3), "
        "identically in SFT, RL and eval.",
    )
    system_prompt: str | None = Field(
        default=None, description="Task instruction added as a system message to every prompt."
    )
    reference: str | None = Field(
        default=None,
        description="Template of a row's reference answer, e.g. '{{ item.answer }}'. Default: taken from the "
        "grader's reference (string_check / text_similarity).",
    )
    response_template: str = Field(
        default="auto",
        description="How a reference answer is written as a response (fallback traces, ICL examples): "
        "'{reasoning}' and '{answer}' are filled in. auto: tried against the grader in a few common forms.",
    )
    lora_rank: Annotated[int, Field(ge=1, le=256)] = Field(default=8, description="LoRA rank (paper: 4).")
    lora_alpha: Auto | Annotated[int, Field(ge=1, le=1024)] = Field(
        default="auto", description="auto: 2 x rank."
    )
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = Field(default=0.0, description="LoRA dropout.")
    max_minutes: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Wall-clock budget; the job pauses itself with a resumable snapshot after it.",
    )
    merge_weights: bool = Field(
        default=False,
        description="Also write the adapter merged into full weights (model_dir points to them).",
    )
    keep_checkpoints: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Keep this many best checkpoints by validation reward."
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        # "synthesis" is the paper's name for the stage that feeds SFT: accept it as an alias.
        if isinstance(data, dict) and "synthesis" in data:
            data = dict(data)
            syn = data.pop("synthesis")
            if "sft" in data:
                raise ValueError("give either 'sft' or its alias 'synthesis', not both")
            data["sft"] = syn
        return data


# ---------------------------------------------------------------------------------------------------------------
# Validation entry point
# ---------------------------------------------------------------------------------------------------------------


_BRANCH_PREFIXES = ("literal[", "constrained-", "function-", "lax-", "json-or-python")
_TYPE_PARTS = {"int", "float", "str", "bool", "dict", "list", "Endpoint"}


def _clean_loc(loc: tuple[Any, ...]) -> list[str]:
    # Pydantic names union branches in the path (e.g. "literal['auto']", "constrained-int"): drop them.
    return [str(p) for p in loc if not str(p).startswith(_BRANCH_PREFIXES) and str(p) not in _TYPE_PARTS]


def _first_error(exc: ValidationError, prefix: str) -> ConfigError:
    """One actionable message for the first invalid field, choosing the union branch that fits the input."""
    errors = exc.errors()
    field = _clean_loc(errors[0]["loc"])[:1]
    same = [e for e in errors if _clean_loc(e["loc"])[:1] == field]
    literals = [e for e in same if e["type"] == "literal_error"]
    others = [e for e in same if e["type"] != "literal_error"]
    inp = same[0].get("input")
    # A string input was meant as one of the keywords; anything else as the value the other branch takes.
    chosen = literals[0] if (isinstance(inp, str) and literals) or not others else others[0]
    if isinstance(inp, dict) and others:
        chosen = max(others, key=lambda e: len(e["loc"]))
    loc = _clean_loc(chosen["loc"])
    param = ".".join([prefix, *loc]) if loc else prefix
    msg = str(chosen["msg"]).removeprefix("Value error, ")
    if chosen["type"] == "extra_forbidden":
        msg = "unknown field; remove it (see the documented fields)"
    else:
        # Name the other accepted forms of a union at the same depth ("'auto'" or "an integer >= 1").
        alts = [e for e in same if e is not chosen and len(_clean_loc(e["loc"])) == len(loc)]
        alts = [e for e in alts if e["type"] not in ("model_type", "dict_type")]
        if alts:
            msg += ", or " + " or ".join(str(e["msg"]).removeprefix("Input should be ") for e in alts)
    got = chosen.get("input")
    shown = "" if isinstance(got, dict) or chosen["type"] == "missing" else f" (got {got!r})"
    return ConfigError(f"Invalid {param}: {msg}{shown}.", param=param)


@dataclass(frozen=True)
class ParsedConfig:
    method: Literal["reinforcement", "supervised"]
    hyperparameters: SupervisedHyperparameters | ReinforcementHyperparameters
    openrft: OpenRFTConfig


def parse_config(
    method: str, hyperparameters: dict[str, Any] | None, openrft: dict[str, Any] | None
) -> ParsedConfig:
    """Validate a job's configuration into typed objects; raises :class:`ConfigError` naming the field."""
    if method not in ("reinforcement", "supervised"):
        raise ConfigError(
            f"Unsupported method.type {method!r}: use 'reinforcement' or 'supervised'.", param="method.type"
        )
    hp_prefix = f"method.{method}.hyperparameters"
    hp_cls = ReinforcementHyperparameters if method == "reinforcement" else SupervisedHyperparameters
    try:
        hp = hp_cls.model_validate(hyperparameters or {})
    except ValidationError as e:
        raise _first_error(e, hp_prefix) from None
    try:
        ext = OpenRFTConfig.model_validate(openrft or {})
    except ValidationError as e:
        raise _first_error(e, "openrft") from None
    if method == "reinforcement" and not (ext.sft.enabled or ext.rl.enabled):
        raise ConfigError(
            "Nothing to train: enable openrft.sft.enabled or openrft.rl.enabled (or both, the default).",
            param="openrft.rl.enabled",
        )
    if ext.prm.type == "hf" and not ext.prm.path:
        raise ConfigError(
            "openrft.prm.type 'hf' needs openrft.prm.path (a local directory or Hugging Face id of the PRM).",
            param="openrft.prm.path",
        )
    if ext.prm.type == "endpoint":
        for name in ("base_url", "model"):
            if not getattr(ext.prm, name):
                raise ConfigError(
                    f"openrft.prm.type 'endpoint' needs openrft.prm.{name}.", param=f"openrft.prm.{name}"
                )
    if method == "reinforcement" and ext.prm.type != "none" and not ext.rl.enabled:
        raise ConfigError(
            "openrft.prm is used only by the RL stage: enable openrft.rl.enabled or set prm.type to 'none'.",
            param="openrft.prm.type",
        )
    if method == "supervised":
        given = openrft or {}
        for name in ("rl", "prm", "augmentation", "synthesis", "icl_k"):
            if name in given:
                raise ConfigError(
                    f"openrft.{name} does not apply to method 'supervised' (plain LoRA SFT on the messages).",
                    param=f"openrft.{name}",
                )
    if ext.rl.vllm_mode == "server" and ext.rl.rollout_engine == "vllm" and not ext.rl.vllm_server_base_url:
        raise ConfigError(
            "openrft.rl.vllm_mode 'server' needs openrft.rl.vllm_server_base_url (a trl vllm-serve URL).",
            param="openrft.rl.vllm_server_base_url",
        )
    if ext.response_template != "auto" and "{answer}" not in ext.response_template:
        raise ConfigError(
            "openrft.response_template must contain '{answer}' (and may contain '{reasoning}').",
            param="openrft.response_template",
        )
    return ParsedConfig(method=method, hyperparameters=hp, openrft=ext)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Hardware and "auto" rules
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hardware:
    """What the auto rules adapt to."""

    gpu: bool
    cpu_count: int

    @staticmethod
    def detect() -> Hardware:
        """Torch-free guess (API process); the worker passes the real answer from torch."""
        gpu = bool(shutil.which("nvidia-smi")) and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != ""
        return Hardware(gpu=gpu, cpu_count=os.cpu_count() or 1)


@dataclass(frozen=True)
class RunPlan:
    """Every "auto" resolved for one run: what the trainer actually uses."""

    method: str
    # SFT
    sft_enabled: bool
    sft_epochs: int
    sft_batch_size: int
    sft_learning_rate: float
    samples_per_question: int
    samples_without_reference: int
    # RL
    rl_enabled: bool
    rl_batch_size: int
    num_generations: int
    rl_learning_rate: float
    """RL's rate from a fresh adapter (RL from the base); the RL stage narrows the plan to
    ``rl_learning_rate_from_sft`` when it continues the SFT adapter."""
    rl_learning_rate_from_sft: float
    rl_epochs: int
    rl_max_steps: int
    max_completion_length: int
    eval_interval: int
    eval_samples: int
    eval_temperature: float
    lora_alpha: int
    rollout_engine: Literal["transformers", "vllm"]
    vllm_mode: Literal["colocate", "server"] = "colocate"
    rl_temperature: float = 1.0
    """Rollout temperature (the RL probe may settle on another group size, not on another temperature yet)."""
    rl_time_budget_s: float | None = None
    """RL ends at its next step after this many seconds of the stage (None: no time budget)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rollout_server_gpu(cfg: ParsedConfig, gpus: int, *, vllm_available: bool, colocate_fits: bool) -> bool:
    """Whether a launcher with ``gpus`` devices for the job gives the last one to a ``trl vllm-serve`` rollout
    server (and trains on the others): vLLM rollouts in ``auto`` mode, no server given, at least 2 GPUs, and
    the colocated layout does not fit (``colocate_fits``: trainer.memory's estimate with vLLM's share on every
    training GPU). Colocated is the faster layout when it fits: every GPU generates (bench/results/
    distributed-plan.md; TRL measured colocate 1.4-2x faster), so the server only buys the memory back."""
    rl = cfg.openrft.rl
    vllm = rl.rollout_engine == "vllm" or (rl.rollout_engine == "auto" and vllm_available)
    return (
        cfg.method == "reinforcement"
        and rl.enabled
        and vllm
        and rl.vllm_mode == "auto"
        and not rl.vllm_server_base_url
        and gpus >= 2
        and not colocate_fits
    )


def check_hardware(cfg: ParsedConfig, hardware: Hardware) -> None:
    """Refuse what the run's hardware cannot do (checked where the hardware is known: the worker, the CLI)."""
    strategy = cfg.openrft.distributed.strategy
    if strategy != "ddp" and not hardware.gpu:
        raise ConfigError(
            f"openrft.distributed.strategy {strategy!r} shards the model over GPUs and this worker has none: use "
            "'ddp' (the default) on the CPU.",
            param="openrft.distributed.strategy",
        )


_EFFORT_TOKENS = {
    False: {"low": 64, "default": 128, "auto": 128, "medium": 128, "high": 256},
    True: {"low": 512, "default": 1024, "auto": 1024, "medium": 1024, "high": 1536},
}


def _val(v: Any, default: Any) -> Any:
    return default if v == "auto" else v


def plan_run(
    cfg: ParsedConfig,
    *,
    n_train: int,
    hardware: Hardware,
    vllm_available: bool = False,
) -> RunPlan:
    """Resolve every "auto" for ``n_train`` training rows (after augmentation) on ``hardware``."""
    check_hardware(cfg, hardware)
    hp = cfg.hyperparameters
    ext = cfg.openrft
    gpu = hardware.gpu
    lr_mult = float(_val(hp.learning_rate_multiplier, 1.0))
    is_rl = cfg.method == "reinforcement"
    rl_hp = hp if isinstance(hp, ReinforcementHyperparameters) else ReinforcementHyperparameters()
    compute = float(_val(rl_hp.compute_multiplier, 1.0))

    if is_rl:
        sft_epochs = int(_val(ext.sft.n_epochs, 8 if gpu else 3))
        sft_bs = int(_val(ext.sft.batch_size, 8 if gpu else 4))
    else:  # supervised: OpenAI's own fields drive SFT
        sft_epochs = int(_val(hp.n_epochs, 3))
        sft_bs = int(_val(hp.batch_size, 8 if gpu else 4))
    sft_lr = float(_val(ext.sft.learning_rate, 5e-5 if gpu else 2e-4)) * lr_mult
    samples = int(_val(ext.sft.samples_per_question, 16 if gpu else 2))
    search = int(_val(ext.sft.samples_without_reference, 64 if gpu else 8))

    rl_bs = int(_val(hp.batch_size, 8 if gpu else 2)) if is_rl else 0
    num_gen = int(_val(ext.rl.num_generations, max(2, round((8 if gpu else 4) * math.sqrt(compute)))))
    rl_lr = float(_val(ext.rl.learning_rate, 3e-5 if gpu else 2e-4)) * lr_mult
    rl_lr_sft = float(_val(ext.rl.learning_rate, 3e-5 if gpu else 5e-5)) * lr_mult
    rl_epochs = int(_val(hp.n_epochs, 6 if gpu else 3)) if is_rl else 0
    steps_per_epoch = max(1, math.ceil(n_train / max(1, rl_bs))) if is_rl else 0
    if ext.rl.max_steps != "auto":
        rl_steps = int(ext.rl.max_steps)
    else:
        rl_steps = rl_epochs * steps_per_epoch
        if not gpu:
            rl_steps = min(rl_steps, max(1, round(120 * compute)))
    rl_on = is_rl and ext.rl.enabled
    if not rl_on:
        rl_steps = 0
    max_len = _EFFORT_TOKENS[gpu][rl_hp.reasoning_effort]
    per_epoch = min(rl_steps, steps_per_epoch) if rl_steps else 0
    interval = int(_val(rl_hp.eval_interval, min(50, max(1, math.ceil(per_epoch / 4))) if rl_steps else 1))
    budget = ext.rl.time_budget_minutes
    rl_time = (
        (None if gpu else 12 * 60.0) if budget == "auto" else (None if budget is None else 60 * float(budget))
    )
    paper = ext.eval.protocol == "paper"
    eval_samples = int(_val(rl_hp.eval_samples, 3 if paper else 1))
    eval_temp = ext.eval.temperature if ext.eval.temperature is not None else (0.6 if paper else 0.0)
    engine: Literal["transformers", "vllm"] = "transformers"
    if ext.rl.rollout_engine == "vllm" or (ext.rl.rollout_engine == "auto" and gpu and vllm_available):
        engine = "vllm"
    return RunPlan(
        method=cfg.method,
        sft_enabled=(ext.sft.enabled if is_rl else True),
        sft_epochs=sft_epochs,
        sft_batch_size=sft_bs,
        sft_learning_rate=sft_lr,
        samples_per_question=samples,
        samples_without_reference=search,
        rl_enabled=rl_on,
        rl_batch_size=rl_bs,
        num_generations=num_gen,
        rl_learning_rate=rl_lr,
        rl_learning_rate_from_sft=rl_lr_sft,
        rl_epochs=rl_epochs,
        rl_max_steps=rl_steps,
        max_completion_length=max_len,
        eval_interval=interval,
        eval_samples=eval_samples,
        eval_temperature=eval_temp,
        lora_alpha=int(_val(ext.lora_alpha, 2 * ext.lora_rank)),
        rollout_engine=engine,
        # auto is a server only once a launcher started one (rollout_server_gpu) and gave its URL.
        vllm_mode="server" if ext.rl.vllm_mode == "server" or ext.rl.vllm_server_base_url else "colocate",
        rl_temperature=float(_val(ext.rl.temperature, 1.0 if gpu else 0.8)),
        rl_time_budget_s=rl_time if rl_on else None,
    )


def redact_secrets(obj: Any) -> Any:
    """Copy of a dumped config with every ``api_key`` masked (configs are echoed to users and logged)."""
    if isinstance(obj, dict):
        return {k: ("***" if k == "api_key" and v else redact_secrets(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_secrets(v) for v in obj]
    return obj


def user_urls(openrft: dict[str, Any]) -> list[tuple[str, str]]:
    """The URLs a job's options ask the worker to call, with their option paths (from the resolved extension
    object): the teachers', the process reward judge's and the rollout server's. trainer.public_urls polices them."""
    found = []
    for stage in ("sft", "augmentation"):
        teacher = (openrft.get(stage) or {}).get("teacher")
        if isinstance(teacher, dict) and teacher.get("base_url"):
            found.append((f"openrft.{stage}.teacher.base_url", str(teacher["base_url"])))
    for path, key in (("prm", "base_url"), ("rl", "vllm_server_base_url")):
        url = (openrft.get(path) or {}).get(key)
        if url:
            found.append((f"openrft.{path}.{key}", str(url)))
    return found


def resolve_config(
    method: str,
    hyperparameters: dict[str, Any] | None,
    openrft: dict[str, Any] | None,
    *,
    base_model: str | None = None,
) -> dict[str, Any]:
    """Validate a job's configuration at creation time (the API's 400 path).

    Returns ``{"hyperparameters": ..., "openrft": ...}``: the OpenAI hyperparameters with every field present
    ("auto" kept as given, for the job's echo) and the full extension object with defaults (secrets masked).
    The "auto" rules are not resolved here: they depend on the worker's hardware and the real row count, so
    the worker resolves them once (:func:`plan_run`) and reports the plan in the job's first event.
    """
    cfg = parse_config(method, hyperparameters, openrft)
    if base_model is not None and not base_model.strip():
        raise ConfigError("model must be a non-empty base model name.", param="model")
    return {
        "hyperparameters": cfg.hyperparameters.model_dump(),
        "openrft": redact_secrets(cfg.openrft.model_dump()),
    }
