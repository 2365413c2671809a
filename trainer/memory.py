"""The memory a job needs on each device, estimated before it starts, and the refusal of one that cannot fit.

A job that runs out of memory fails minutes in (after loading, synthesis, the first rollouts) with a CUDA error
that names no option; checked at the start, it fails at once with the numbers and what to change.

The estimate is per device (one GPU, or one process on the CPU) and per training stage (SFT, RL); a job needs its
largest stage. Per stage:

- **Model states**, counted as in the ZeRO paper (Rajbhandari et al. 2020, "mixed-precision Adam needs 16 bytes
  per parameter": 2 for 16-bit weights, 2 for 16-bit gradients, 12 for the fp32 master copy and Adam's two
  moments). What each strategy actually keeps:

  ==================  ===========================================================================================
  ddp                 every rank a full replica; HF Trainer trains weights in their loaded dtype, so full
                      fine-tuning in bf16 keeps bf16 gradients and Adam moments (8 bytes/param, no fp32 master);
                      DDP's gradient buckets are a second copy of the gradients on 2+ ranks
  deepspeed_zero2     weights replicated; gradients and the fp32 master + moments (12 bytes) sharded over ranks
  deepspeed_zero3     all of it sharded, plus the parameters gathered for the layers being computed
  fsdp                as ZeRO-3; accelerate upcasts trainable parameters to fp32 (4 + 4 + 8 bytes, sharded)
  ==================  ===========================================================================================

  LoRA trains only the adapter (PEFT keeps it in fp32: 16 bytes per adapter parameter); the base is frozen in the
  device's dtype (bf16/fp16 on a GPU, fp32 on the CPU).
- **Reference model** for the KL term (``rl.beta > 0``): with LoRA TRL uses the base with the adapter disabled,
  so nothing; with full fine-tuning a frozen copy of the weights (sharded like them under ZeRO-3 / FSDP).
- **Activations** of one micro-batch: on a GPU with activation checkpointing, the micro-batch
  :func:`trainer.device.micro_batches` will choose (:func:`trainer.device.bytes_per_sequence` each) plus the one
  layer being recomputed; on the CPU (no checkpointing, one micro-batch) every layer's saved tensors.
- **Rollout engine** (RL): transformers' KV cache for the rank's rollouts, or vLLM colocate's share of the GPU
  (``rl.vllm_gpu_memory_utilization``). TRL puts vLLM to sleep while it trains, so a stage needs the larger of
  activations and rollouts on top of the model states, not both. vLLM server mode uses a GPU of its own.
- **Runtime**: CUDA context, NCCL and allocator slack on a GPU; Python and the libraries on the CPU.

It errs high (the largest sequence the job allows, upper-bound activation counts), and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from trainer.device import Device, bytes_per_sequence, micro_batches
from trainer.interface import TrainerError

if TYPE_CHECKING:
    from trainer.config import OpenRFTConfig, RunPlan
    from trainer.distributed import Strategy

GIB = 2**30
RUNTIME_BYTES = {"cuda": 2 * GIB, "cpu": 1 * GIB}
"""Per device beyond the tensors: a CUDA context, cuBLAS and NCCL workspaces and allocator fragmentation; on the
CPU the interpreter with torch, transformers, TRL and datasets imported (about 0.5 GB measured) and their caches."""

Rollout = Literal["transformers", "vllm_colocate", "vllm_server"]
SHARDED = ("deepspeed_zero3", "fsdp")
"""Strategies that shard the parameters themselves (ZeRO-2 shards only gradients and optimizer state)."""


# ---------------------------------------------------------------------------------------------------------------
# The model's shape
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model. The field names are the config's, so a shape can stand in for the
    config where :mod:`trainer.device` reads one."""

    parameters: int
    layer_parameters: int
    """One decoder layer's parameters (what ZeRO-3 / FSDP gather at a time)."""
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    kv_width: int
    """Key/value heads times head dimension: the KV cache holds 2 x this per token and layer."""
    linear: tuple[tuple[int, int], ...]
    """(in, out) of every linear layer LoRA's ``all-linear`` targets (all but the output head)."""

    def lora_parameters(self, rank: int) -> int:
        return rank * sum(i + o for i, o in self.linear)

    def layer_activation_bytes(self, dtype_bytes: int) -> int:
        """Saved tensors of one decoder layer for one token without checkpointing: about 6 hidden-sized (norm
        inputs and outputs, query, attention output) and 4 intermediate-sized (gate, up, their product, the down
        projection's input) per token, rounded up to 8 and 4."""
        return (8 * self.hidden_size + 4 * self.intermediate_size) * dtype_bytes

    @staticmethod
    def of(config: Any) -> ModelShape:
        """Counted from a model built on the meta device (exact for any architecture transformers knows, about a
        second for 8B, no memory); from a Llama-shaped formula where that cannot be built."""
        try:
            return _counted(config)
        except Exception:  # an architecture this transformers cannot build (remote code, a new model type)
            return _formula(config)


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _dims(config: Any) -> dict[str, int]:
    c = _text_config(config)
    hidden = int(c.hidden_size)
    heads = int(c.num_attention_heads)
    head_dim = int(getattr(c, "head_dim", None) or hidden // heads)
    return {
        "hidden": hidden,
        "layers": int(c.num_hidden_layers),
        "vocab": int(c.vocab_size),
        "inter": int(getattr(c, "intermediate_size", None) or 4 * hidden),
        "q": heads * head_dim,
        "kv": int(getattr(c, "num_key_value_heads", None) or heads) * head_dim,
        "tied": int(bool(getattr(c, "tie_word_embeddings", False))),
        "bias": int(bool(getattr(c, "attention_bias", False))),
    }


def _counted(config: Any) -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    d = _dims(config)
    blocks = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=None)
    if blocks is None or len(blocks) != d["layers"]:
        raise ValueError("no decoder-layer list")
    head = model.get_output_embeddings()
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),  # tied weights once
        layer_parameters=sum(p.numel() for p in blocks[0].parameters()),
        num_hidden_layers=d["layers"],
        hidden_size=d["hidden"],
        intermediate_size=d["inter"],
        vocab_size=d["vocab"],
        kv_width=d["kv"],
        linear=tuple(
            (m.in_features, m.out_features)
            for m in model.modules()
            if isinstance(m, torch.nn.Linear) and m is not head
        ),
    )


def _formula(config: Any) -> ModelShape:
    """A decoder of the Llama family: attention (q, k, v, o), a gated MLP (gate, up, down), two norms a layer."""
    d = _dims(config)
    h, i, q, kv = d["hidden"], d["inter"], d["q"], d["kv"]
    linear = ((h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h))
    layer = sum(a * b for a, b in linear) + 2 * h + d["bias"] * (q + 2 * kv)
    return ModelShape(
        parameters=d["layers"] * layer + (2 - d["tied"]) * d["vocab"] * h + h,
        layer_parameters=layer,
        num_hidden_layers=d["layers"],
        hidden_size=h,
        intermediate_size=i,
        vocab_size=d["vocab"],
        kv_width=kv,
        linear=linear * d["layers"],
    )


# ---------------------------------------------------------------------------------------------------------------
# The job's demands and the estimate
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What a job asks of its devices, independent of the model. Batches are global (all ranks together)."""

    device: Literal["cpu", "cuda"]
    device_bytes: int | None = None
    """One GPU's memory: vLLM's share and the micro-batches are planned from it (None on the CPU)."""
    world_size: int = 1
    strategy: Strategy = "ddp"
    lora_rank: int | None = 8
    """None: full fine-tuning."""
    sft_batch: int = 0
    """Sequences per SFT optimizer step; 0: no SFT stage."""
    sft_tokens: int = 0
    rl_batch: int = 0
    """Prompts per RL step (each gets ``num_generations`` rollouts); 0: no RL stage."""
    num_generations: int = 0
    rl_tokens: int = 0
    """Prompt plus completion."""
    beta: float = 0.0
    rollout: Rollout = "transformers"
    vllm_share: float = 0.3
    frozen_parameters: int = 0
    """Another model every rank holds for inference during RL (a Hugging Face process reward model)."""

    @property
    def dtype_bytes(self) -> int:
        return 2 if self.device == "cuda" else 4


@dataclass(frozen=True)
class Phase:
    """One stage's peak on one device, in bytes, by part."""

    stage: str
    weights: int
    gradients: int
    optimizer: int
    reference: int
    frozen: int
    activations: int
    rollout: int
    runtime: int
    micro_batch: int
    accumulation: int
    tokens: int

    @property
    def peak(self) -> int:
        states = self.weights + self.gradients + self.optimizer + self.reference + self.frozen + self.runtime
        # The rollout engine sleeps (vLLM) or its cache is freed (transformers) while the trainer computes.
        return states + max(self.activations, self.rollout)

    def parts(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "reference model": self.reference,
            "other models": self.frozen,
            "activations": self.activations,
            "rollout engine": self.rollout,
            "runtime": self.runtime,
        }


@dataclass(frozen=True)
class MemoryEstimate:
    shape: ModelShape
    workload: Workload
    trainable: int
    phases: tuple[Phase, ...]

    @property
    def worst(self) -> Phase:
        return max(self.phases, key=lambda p: p.peak)

    @property
    def per_device(self) -> int:
        """Bytes one device (one GPU, or one process's share of the CPU's memory) needs at the job's peak."""
        return self.worst.peak

    @property
    def total(self) -> int:
        """Bytes the whole world needs (on the CPU every rank draws on the same memory)."""
        return self.per_device * self.workload.world_size

    def describe(self) -> str:
        p = self.worst
        shown = ", ".join(f"{k} {_gib(v)}" for k, v in p.parts().items() if v >= GIB // 100)
        return f"{p.stage.upper()} stage: {shown} GiB"

    def as_dict(self) -> dict[str, Any]:
        """Numbers in GiB, for results files and events."""
        return {
            "parameters": self.shape.parameters,
            "trainable": self.trainable,
            "per_device_gib": round(self.per_device / GIB, 2),
            "total_gib": round(self.total / GIB, 2),
            "phases": {
                p.stage: {
                    **{k: round(v / GIB, 2) for k, v in p.parts().items()},
                    "peak": round(p.peak / GIB, 2),
                    "micro_batch": p.micro_batch,
                    "accumulation": p.accumulation,
                    "tokens": p.tokens,
                }
                for p in self.phases
            },
        }


def estimate_memory(model: Any, workload: Workload) -> MemoryEstimate:
    """The per-device memory of ``workload`` on ``model`` (a transformers config, or a :class:`ModelShape`)."""
    shape = model if isinstance(model, ModelShape) else ModelShape.of(model)
    w = workload
    n, b = w.world_size, w.dtype_bytes
    full = w.lora_rank is None
    trainable = shape.parameters if full else shape.lora_parameters(w.lora_rank or 0)
    sharded = w.strategy in SHARDED
    deepspeed = w.strategy.startswith("deepspeed")
    # Bytes of a trainable parameter: PEFT keeps adapters in fp32, accelerate upcasts FSDP's to fp32.
    tb = 4 if not full or (w.strategy == "fsdp" and w.device == "cuda") else b
    weights = (shape.parameters - trainable) * b + trainable * tb
    grads = trainable * tb
    optim = 12 * trainable if deepspeed else 2 * trainable * tb  # fp32 master + moments / moments alone
    if sharded:
        outside = shape.parameters - shape.num_hidden_layers * shape.layer_parameters
        weights = (
            weights // n + (outside + 2 * shape.layer_parameters) * b
        )  # gathered: current and next layer
    if w.strategy != "ddp":
        grads, optim = grads // n, optim // n
    elif n > 1:
        grads *= 2  # DDP's gradient buckets: a second copy
    reference = shape.parameters * b // (n if sharded else 1) if full and w.beta > 0 else 0
    runtime = RUNTIME_BYTES[w.device]
    device = Device(w.device, bf16=w.device == "cuda", total_bytes=w.device_bytes)

    def phase(stage: str, seqs: int, tokens: int, rollout: int, *, rl: bool) -> Phase:
        if w.device == "cuda" and w.device_bytes:
            micro, accum = micro_batches(seqs, tokens=tokens, config=shape, device=device)
            per_seq = bytes_per_sequence(tokens, shape) + tokens * shape.layer_activation_bytes(b)
        else:  # the CPU: no checkpointing, the whole batch at once; logits in fp32, kept twice by TRL
            micro, accum = seqs, 1
            per_seq = tokens * (
                2 * shape.vocab_size * 4 + shape.num_hidden_layers * shape.layer_activation_bytes(b)
            )
        return Phase(
            stage=stage,
            weights=weights,
            gradients=grads,
            optimizer=optim,
            reference=reference if rl else 0,
            frozen=w.frozen_parameters * b if rl else 0,
            activations=micro * per_seq,
            rollout=rollout,
            runtime=runtime,
            micro_batch=micro,
            accumulation=accum,
            tokens=tokens,
        )

    phases = []
    if w.sft_batch:
        phases.append(phase("sft", math.ceil(w.sft_batch / n), w.sft_tokens, 0, rl=False))
    if w.rl_batch:
        seqs = math.ceil(w.rl_batch / n) * w.num_generations
        if w.rollout == "vllm_colocate" and w.device_bytes:
            engine = int(w.vllm_share * w.device_bytes)  # vLLM's own weights copy and KV cache live in it
        elif w.rollout == "vllm_server":
            engine = 0  # on the server's GPU
        else:  # transformers generates the rank's rollouts at once, from the training weights
            engine = seqs * w.rl_tokens * shape.num_hidden_layers * 2 * shape.kv_width * b
        phases.append(phase("rl", seqs, w.rl_tokens, engine, rl=True))
    if not phases:  # evaluation only: the model and generation
        phases.append(phase("eval", 0, 0, 0, rl=False))
    return MemoryEstimate(shape=shape, workload=w, trainable=trainable, phases=tuple(phases))


# ---------------------------------------------------------------------------------------------------------------
# The refusal
# ---------------------------------------------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def _need(est: MemoryEstimate) -> int:
    """What is compared with the memory at hand: one GPU's need, or the whole world's on the CPU."""
    return est.per_device if est.workload.device == "cuda" else est.total


def check_fits(estimate: MemoryEstimate, device_bytes: int) -> None:
    """Raise ``insufficient_memory`` when the job needs more than ``device_bytes``: one GPU's memory, or on the CPU
    the machine's available memory for all its processes. The message gives the numbers and what would fit."""
    w = estimate.workload
    need = _need(estimate)
    if need <= device_bytes:
        return
    n = w.world_size
    if w.device == "cuda":
        gpus = "its GPU has" if n == 1 else f"each of its {n} GPUs has"
        where = f"about {_gib(need)} GiB per GPU, and {gpus} {_gib(device_bytes)} GiB"
    else:
        procs = "1 process" if n == 1 else f"{n} processes"
        where = (
            f"about {_gib(need)} GiB of memory ({procs} x {_gib(estimate.per_device)} GiB), "
            f"and this machine has {_gib(device_bytes)} GiB available"
        )
    fixes = [
        f"{text} (about {_gib(after)} GiB{', fits' if after <= device_bytes else ''})"
        for text, after in _remedies(estimate)
        if after < need
    ]
    advice = "To make it fit: " + "; ".join(fixes) + "." if fixes else "Use a smaller base model."
    raise TrainerError(
        f"This job does not fit its devices: it needs {where} ({estimate.describe()}; the estimate assumes the "
        f"longest sequences the job allows). {advice}",
        code="insufficient_memory",
    )


def _remedies(est: MemoryEstimate) -> list[tuple[str, int]]:
    """What the user can change, each with the need it leads to, smallest first."""
    w = est.workload
    out: list[tuple[str, int]] = []

    def try_(text: str, **changes: Any) -> None:
        out.append((text, _need(estimate_memory(est.shape, replace(w, **changes)))))

    if w.lora_rank is None:
        try_("train a LoRA adapter instead of the full weights", lora_rank=8)
    if w.device == "cuda":
        if w.strategy in ("ddp", "deepspeed_zero2"):
            gpus = max(w.world_size, 8)
            try_(
                f"openrft.distributed.strategy 'deepspeed_zero3' (or 'fsdp') on {gpus} GPUs, which shards weights, "
                "gradients and optimizer state",
                strategy="deepspeed_zero3",
                world_size=gpus,
            )
        else:
            try_(f"more GPUs (openrft.distributed.processes={2 * w.world_size})", world_size=2 * w.world_size)
        if w.rollout == "vllm_colocate":
            try_(
                "openrft.rl.vllm_mode 'server' (rollouts on a GPU of their own) or a lower "
                f"openrft.rl.vllm_gpu_memory_utilization than {w.vllm_share}",
                rollout="vllm_server",
            )
    elif w.world_size > 1:
        try_(
            "fewer processes (openrft.distributed.processes): each holds its own copy of the model",
            world_size=1,
        )
    try_(
        "shorter sequences (hyperparameters.reasoning_effort 'low', a smaller openrft.sft.max_length)",
        sft_tokens=_half(w.sft_tokens),
        rl_tokens=_half(w.rl_tokens),
    )
    try_("a smaller hyperparameters.batch_size", sft_batch=_half(w.sft_batch), rl_batch=_half(w.rl_batch))
    return sorted(out, key=lambda r: r[1])


def _half(n: int) -> int:
    """Half of a batch or length; 0 (a stage that does not run) stays 0."""
    return max(1, n // 2) if n else 0


def workload_for(
    plan: RunPlan,
    options: OpenRFTConfig,
    *,
    world_size: int,
    device: Device,
    prompt_tokens: int = 512,
    prm_parameters: int = 0,
) -> Workload:
    """The :class:`Workload` of a resolved plan: its stages, batches and sequence lengths (``prompt_tokens``: the
    longest training prompt; for a supervised job the longest conversation), strategy, LoRA and rollout engine."""
    rl_tokens = prompt_tokens + plan.max_completion_length
    # Reinforcement SFT trains on traces sampled within the RL budget (or reference answers), never past max_length.
    sft_tokens = min(options.sft.max_length, rl_tokens if plan.method == "reinforcement" else prompt_tokens)
    rollout: Rollout = "transformers"
    if plan.rollout_engine == "vllm" and device.kind == "cuda":
        rollout = "vllm_server" if plan.vllm_mode == "server" else "vllm_colocate"
    return Workload(
        device=device.kind,
        device_bytes=device.total_bytes,
        world_size=world_size,
        strategy=options.distributed.strategy,
        lora_rank=options.lora_rank,
        sft_batch=plan.sft_batch_size if plan.sft_enabled else 0,
        sft_tokens=sft_tokens,
        rl_batch=plan.rl_batch_size if plan.rl_enabled else 0,
        num_generations=plan.num_generations,
        rl_tokens=rl_tokens,
        beta=options.rl.beta,
        rollout=rollout,
        vllm_share=options.rl.vllm_gpu_memory_utilization,
        frozen_parameters=prm_parameters,
    )


def available_ram() -> int:
    """The machine's memory available to new allocations (psutil comes with accelerate)."""
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_job(
    model_config: Any,
    plan: RunPlan,
    options: OpenRFTConfig,
    *,
    world_size: int,
    device: Device,
    prompt_tokens: int = 512,
    prm_config: Any = None,
) -> MemoryEstimate:
    """The memory per device of a resolved job (see :func:`refuse_if_too_big` for the arguments)."""
    prm = ModelShape.of(prm_config).parameters if prm_config is not None else 0
    work = workload_for(
        plan, options, world_size=world_size, device=device, prompt_tokens=prompt_tokens, prm_parameters=prm
    )
    return estimate_memory(model_config, work)


def refuse_if_too_big(
    model_config: Any,
    plan: RunPlan,
    options: OpenRFTConfig,
    *,
    world_size: int,
    device: Device,
    prompt_tokens: int = 512,
    prm_config: Any = None,
    available_bytes: int | None = None,
) -> MemoryEstimate:
    """Estimate the job's memory and raise ``TrainerError(code="insufficient_memory")`` if it cannot fit.

    Call it once the plan is resolved and before the base model is loaded (on the CPU, available memory is
    measured: a loaded model would be counted twice), on rank 0 (``distributed.on_main`` gives every rank the
    verdict). ``device``: :func:`trainer.device.detect`'s; ``available_bytes`` overrides what is compared: one
    GPU's total memory, or the machine's available memory on the CPU. ``prm_config``: a Hugging Face process
    reward model's config, held by every rank during RL."""
    est = estimate_job(
        model_config,
        plan,
        options,
        world_size=world_size,
        device=device,
        prompt_tokens=prompt_tokens,
        prm_config=prm_config,
    )
    limit = available_bytes if available_bytes is not None else device.total_bytes
    if limit is None and device.kind == "cpu":
        limit = available_ram()
    if limit is not None:
        check_fits(est, limit)
    return est
