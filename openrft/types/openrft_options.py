"""Typed request parameters: OpenAI's RFT hyperparameters and the OpenRFT extension object.

They mirror the server's job configuration (the ``"openrft"`` object in the job body, see the service's
``trainer/config.py``); every key is optional and the server fills in defaults and resolves ``"auto"``.
A test keeps these keys in step with the server's fields.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "AugmentationOptions",
    "DistributedOptions",
    "EndpointOptions",
    "EvalOptions",
    "OpenRFTOptions",
    "PRMOptions",
    "RLOptions",
    "ReinforcementHyperparameters",
    "ReinforcementMethod",
    "SFTOptions",
    "SupervisedHyperparameters",
    "SupervisedMethod",
]

Auto = Literal["auto"]


class SupervisedHyperparameters(TypedDict, total=False):
    batch_size: Auto | int
    learning_rate_multiplier: Auto | float
    n_epochs: Auto | int


class ReinforcementHyperparameters(SupervisedHyperparameters, total=False):
    reasoning_effort: Literal["default", "low", "medium", "high"]
    compute_multiplier: Auto | float
    eval_interval: Auto | int
    eval_samples: Auto | int


class EndpointOptions(TypedDict, total=False):
    """An OpenAI-compatible chat completions endpoint (a teacher or a judge)."""

    base_url: str
    model: str
    api_key: str | None
    timeout: float


class AugmentationOptions(TypedDict, total=False):
    enabled: bool
    n_variants: int
    teacher: Literal["policy"] | EndpointOptions
    paraphrase: bool
    shuffle_options: bool
    max_new_tokens: int


class SFTOptions(TypedDict, total=False):
    enabled: bool
    samples_per_question: Auto | int
    samples_without_reference: Auto | int
    fallback_to_reference: bool
    teacher: Literal["policy"] | EndpointOptions
    temperature: float
    n_epochs: Auto | int
    learning_rate: Auto | float
    batch_size: Auto | int
    max_length: int


class RLOptions(TypedDict, total=False):
    enabled: bool
    algorithm: str
    num_generations: Auto | int
    max_steps: Auto | int
    learning_rate: Auto | float
    temperature: Auto | float
    beta: float
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"]
    rollout_engine: Literal["auto", "transformers", "vllm"]
    vllm_mode: Literal["auto", "colocate", "server"]
    vllm_server_base_url: str | None
    vllm_group_port: int | None
    vllm_gpu_memory_utilization: float
    dynamic_sampling: bool
    probe_prompts: int
    early_stop: bool
    time_budget_minutes: Auto | float | None
    patience: int


class PRMOptions(TypedDict, total=False):
    type: Literal["none", "hf", "endpoint", "self"]
    path: str | None
    base_url: str | None
    model: str | None
    api_key: str | None
    alpha: float
    aggregate: Literal["mean", "min", "last"]
    step_separator: str
    max_steps: int


class EvalOptions(TypedDict, total=False):
    protocol: Literal["greedy", "paper"]
    temperature: float | None
    max_samples: int | None
    pass_threshold: float
    at_start: bool
    holdout: Auto | int


class DistributedOptions(TypedDict, total=False):
    processes: int
    strategy: Literal["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]


class OpenRFTOptions(TypedDict, total=False):
    """The ``"openrft"`` object of a job: one switch per stage of the method, plus LoRA and budget."""

    augmentation: AugmentationOptions
    sft: SFTOptions
    rl: RLOptions
    prm: PRMOptions
    eval: EvalOptions
    distributed: DistributedOptions
    icl_k: int
    system_prompt: str | None
    reference: str | None
    response_template: str
    lora_rank: int
    lora_alpha: Auto | int
    lora_dropout: float
    max_minutes: float | None
    merge_weights: bool
    keep_checkpoints: int


class ReinforcementMethod(TypedDict, total=False):
    grader: dict[str, Any]
    hyperparameters: ReinforcementHyperparameters
    response_format: dict[str, Any]


class SupervisedMethod(TypedDict, total=False):
    hyperparameters: SupervisedHyperparameters
