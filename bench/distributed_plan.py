"""Paper-scale plan: the OpenRFT paper's 8B policy on one 8 x H100 80GB machine, which configuration, the memory
per GPU (from ``trainer.memory``, for the job options each configuration is) and the expected RL step time.

    python -m bench.distributed_plan        (also written by every ``python -m bench.distributed`` run)

Nothing here runs on a GPU: memory comes from the project's own estimate; step times from a small model whose
inputs are published figures (cited in SOURCES) and stated assumptions (ASSUMPTIONS). Writes
``bench/results/distributed-plan.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainer.config import Hardware, parse_config, plan_run
from trainer.device import Device
from trainer.interface import TrainerError
from trainer.memory import GIB, MemoryEstimate, ModelShape, check_fits, estimate_memory, workload_for

RESULTS = Path(__file__).parent / "results"

# Published figures.
BF16_PEAK = 989e12
"""H100 SXM dense BF16 tensor throughput, FLOP/s (NVIDIA H100 datasheet; 1979 is with sparsity)."""
HBM_BYTES_PER_S = 3.35e12
"""H100 SXM HBM3 bandwidth (NVIDIA H100 datasheet)."""
H100_BYTES = int(79.2 * GIB)
"""An H100 80GB as torch reports it (total_memory)."""
DECODE_B8_S = 0.9975 / 128
"""vLLM's CI performance benchmark (buildkite vllm/performance-benchmark, build 9555, 8xH100 machine):
latency_llama8B_tp1, Llama-3.1-8B on one H100, batch 8, 32 prompt + 128 generated tokens: 997.5 ms mean, so
7.8 ms per decoding step of 8 sequences."""
SOURCES = [
    "NVIDIA H100 Tensor Core GPU datasheet: 989 TFLOPS dense BF16, 3.35 TB/s HBM3, NVLink 900 GB/s (SXM5).",
    "vLLM CI performance benchmark (buildkite.com/vllm/performance-benchmark, build 9555, 8xH100): "
    "latency_llama8B_tp1, batch 8, 32 in / 128 out tokens, 997.5 ms mean -> 7.8 ms per decoding step.",
    "Rajbhandari et al. 2020, ZeRO (arXiv 1910.02054): mixed-precision Adam holds 16 bytes per parameter "
    "(7.5B parameters -> 120 GB), and stage 3 divides it by the number of GPUs.",
    "The Llama 3 Herd of Models (Meta, arXiv 2407.21783): 380-430 BF16 TFLOPS per H100 in pre-training "
    "(38-43% MFU), an upper reference for the utilization assumed below.",
    "TRL pull request 3162 (huggingface/trl, March 2025, the colocate mode's origin): GRPO about 2x faster with "
    "vLLM colocated on 7 GPUs than with 7 training GPUs plus a dedicated vLLM server GPU.",
    "Hugging Face blog 'No GPU left behind: Unlocking Efficiency with Co-located vLLM in TRL' (June 2025), as "
    "quoted in a summary of it (the figures were not read in the blog itself): colocate 1.43x faster than server "
    "mode for a 1.5B model, 1.73x for 7B.",
    "OpenRFT (arXiv 2412.16849) and its release: policy Skywork-o1-Open-Llama-3.1-8B, PRM "
    "Skywork-o1-Open-PRM-Qwen-2.5-7B, LoRA rank 4, KL 0.01, up to 1536 generated tokens.",
]

# Assumptions (not measured here; each would move the step times below).
MFU = 0.30
"""Model FLOPs utilization of the training passes (HF Trainer + TRL, activation checkpointing, sequences of
~2k tokens): below Llama 3's 38-43% for a tuned pre-training stack."""
NVLINK_BYTES_PER_S = 360e9
"""Achieved per-GPU collective bandwidth over NVLink 4 (450 GB/s per direction, ~80%)."""
SYNC_S = 2.0
"""Per step: TRL merging the LoRA (or gathering ZeRO-3's shards) and loading the weights into vLLM, plus vLLM's
wake-up and sleep in colocate mode or the NCCL push to the server."""
PROMPT_TOKENS = 512
"""The paper's prompt with three ICL examples and a 4-option question, rounded up."""
ASSUMPTIONS = [
    f"Training passes run at {MFU:.0%} MFU (Llama 3 reached 38-43% in tuned pre-training).",
    f"Collectives reach {NVLINK_BYTES_PER_S / 1e9:.0f} GB/s per GPU over NVLink and do not overlap compute "
    "(an upper bound on their cost).",
    f"Weight sync into vLLM and its wake/sleep take {SYNC_S:.0f} s a step.",
    "Decoding is bound by memory bandwidth: a step reads the weights and the batch's KV cache; the published "
    "batch-8 latency fixes the engine's remaining per-step cost, which is kept for other batches.",
    "Every rollout runs to the generation budget (a batch waits for its longest reply): an upper bound.",
    f"Prompts are {PROMPT_TOKENS} tokens. Reward grading (string or python graders) costs nothing next to this.",
]


def llama31_8b() -> Any:
    """The paper's policy shape (Skywork-o1-Open-Llama-3.1-8B is a Llama-3.1-8B fine-tune)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
    )  # fmt: skip


def qwen25_7b() -> Any:
    """The paper's PRM shape (Skywork-o1-Open-PRM-Qwen-2.5-7B: Qwen2.5-7B with a value head)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Setup:
    name: str
    strategy: str = "ddp"
    gpus: int = 8
    """Training GPUs (the server, if any, takes one more)."""
    full: bool = False
    vllm_mode: str = "colocate"
    prm: bool = False


SETUPS = [
    Setup("A. LoRA r=4, DDP on 8 GPUs, vLLM colocate (recommended)"),
    Setup("B. LoRA r=4, DDP on 7 GPUs, vLLM server on the 8th", gpus=7, vllm_mode="server"),
    Setup("C. A + the paper's 7B PRM (hf) on every GPU", prm=True),
    Setup("D. Full fine-tuning, ZeRO-3 on 8 GPUs, vLLM colocate", strategy="deepspeed_zero3", full=True),
    Setup("E. Full fine-tuning, ZeRO-2 on 8 GPUs, vLLM colocate", strategy="deepspeed_zero2", full=True),
    Setup("F. Full fine-tuning, DDP on 8 GPUs, vLLM colocate", full=True),
]


def job(setup: Setup, effort: str) -> tuple[Any, Any]:
    """The job options of a setup, resolved by the project's own planner for 600 RL rows (100 + 5 variants each)
    on a GPU worker: the plan and the parsed options."""
    cfg = parse_config(
        "reinforcement",
        {"reasoning_effort": effort},
        {
            "lora_rank": 4,
            "rl": {
                "rollout_engine": "vllm",
                "vllm_mode": setup.vllm_mode,
                "beta": 0.01,
                **({"vllm_server_base_url": "http://vllm:8000"} if setup.vllm_mode == "server" else {}),
            },
            "distributed": {"processes": setup.gpus, "strategy": setup.strategy},
            **(
                {"prm": {"type": "hf", "path": "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B"}}
                if setup.prm
                else {}
            ),
        },
    )
    return plan_run(cfg, n_train=600, hardware=Hardware(gpu=True, cpu_count=64)), cfg.openrft


def memory(setup: Setup, policy: ModelShape, prm: ModelShape, effort: str) -> MemoryEstimate:
    plan, options = job(setup, effort)
    work = workload_for(
        plan,
        options,
        world_size=setup.gpus,
        device=Device("cuda", bf16=True, total_bytes=H100_BYTES),
        prompt_tokens=PROMPT_TOKENS,
        prm_parameters=prm.parameters if setup.prm else 0,
    )
    if setup.full:  # not a job option yet: the estimate of what it would need
        work = replace(work, lora_rank=None)
    return estimate_memory(policy, work)


def decode_step_s(batch: int, context: int, policy: ModelShape) -> float:
    """Seconds per decoding step of ``batch`` sequences with ``context`` tokens each, on one H100."""
    kv_per_token = policy.num_hidden_layers * 2 * policy.kv_width * 2

    def memory_s(b: int, ctx: int) -> float:
        return (2 * policy.parameters + b * ctx * kv_per_token) / HBM_BYTES_PER_S

    fixed = DECODE_B8_S - memory_s(8, 32 + 64)  # the published run's mean context: 32 in + 128 out
    return fixed + memory_s(batch, context)


def step_seconds(setup: Setup, est: MemoryEstimate, policy: ModelShape, prm: ModelShape) -> dict[str, float]:
    w = est.workload
    p, n = policy.parameters, setup.gpus
    seqs = w.rl_batch * w.num_generations
    completion = w.rl_tokens - PROMPT_TOKENS
    tokens = seqs * w.rl_tokens
    engines = n if setup.vllm_mode == "colocate" else 1
    per_engine = math.ceil(seqs / engines)
    rollout = completion * decode_step_s(per_engine, PROMPT_TOKENS + completion // 2, policy)
    rollout += 2 * p * per_engine * PROMPT_TOKENS / (BF16_PEAK * MFU)  # prefill
    # Forward 2PT, backward 6PT with weight gradients or 2PT without (LoRA), recompute 2PT; the KL reference's
    # forward 2PT (beta > 0); a PRM's forward over the same tokens.
    flops = ((8 if setup.full else 6) + (2 if w.beta > 0 else 0)) * p * tokens
    if setup.prm:
        flops += 2 * prm.parameters * tokens
    train = flops / (n * BF16_PEAK * MFU)
    micro = max(ph.accumulation for ph in est.phases if ph.stage == "rl")
    shard = 2 * p * (n - 1) / n / NVLINK_BYTES_PER_S  # one collective over the bf16 weights
    comm = {
        "ddp": 2 * shard if setup.full else 0.0,  # all-reduce of the gradients (LoRA's are a few MB)
        "deepspeed_zero2": 2 * shard,  # reduce-scatter of gradients, all-gather of the updated weights
        "deepspeed_zero3": 4
        * shard
        * micro,  # per micro-batch: gather for forward, recompute, backward; scatter
    }[setup.strategy]
    return {"rollout": rollout, "train": train, "communication": comm, "sync": SYNC_S}


def _fits(est: MemoryEstimate) -> str:
    try:
        check_fits(est, H100_BYTES)
    except TrainerError:
        return "**no**"
    return "yes"


def write_plan() -> dict[str, Any]:
    policy, prm = ModelShape.of(llama31_8b()), ModelShape.of(qwen25_7b())
    rows, data = [], []
    for s in SETUPS:
        est = memory(s, policy, prm, "high")
        ph = est.worst
        default = step_seconds(s, memory(s, policy, prm, "default"), policy, prm)
        high = step_seconds(s, est, policy, prm)
        plan, _ = job(s, "high")
        gib = {k: v / GIB for k, v in ph.parts().items()}
        data.append({"setup": s.name, "memory": est.as_dict(), "step_s": {"1024": default, "1536": high}})
        fits = _fits(est)
        rows.append(
            f"| {s.name} | {est.per_device / GIB:.1f} | {fits} | {gib['weights']:.1f} / "
            f"{gib['gradients'] + gib['optimizer']:.1f} / {gib['reference model']:.1f} / {gib['other models']:.1f} "
            f"| {gib['activations']:.1f} (micro {ph.micro_batch} x {ph.accumulation}) | {gib['rollout engine']:.1f} "
            + (
                f"| {sum(default.values()):.0f} | {sum(high.values()):.0f} ({high['rollout']:.0f} + "
                f"{high['train']:.1f} + {high['communication']:.1f} + {high['sync']:.0f}) "
                f"| {plan.rl_max_steps * sum(high.values()) / 3600:.1f} |"
                if fits == "yes"
                else "| - | - | - |"
            )
        )
    refused = ""
    try:
        check_fits(memory(SETUPS[-1], policy, prm, "high"), H100_BYTES)
    except TrainerError as e:
        refused = e.message
    plan, _ = job(SETUPS[0], "high")
    text = f"""# Paper-scale plan: an 8B policy on 8 x H100 80GB

Generated by `python -m bench.distributed_plan` (every `python -m bench.distributed` run rewrites it); nothing
here ran on a GPU. Policy: the paper's Skywork-o1-Open-Llama-3.1-8B, a Llama-3.1-8B shape
({policy.parameters / 1e9:.2f}B parameters, counted on the meta device); PRM (row C): Skywork-o1-Open-PRM-Qwen-2.5-7B,
a Qwen2.5-7B shape ({prm.parameters / 1e9:.2f}B). Job: the project's GPU plan for 600 RL rows (100 + 5
augmented variants each), `reasoning_effort` "high" (the paper's 1536 generated tokens), {plan.rl_batch_size} prompts
x {plan.num_generations} rollouts per step, {plan.rl_max_steps} steps ({plan.rl_epochs} epochs), KL beta 0.01 (the
paper's), LoRA rank 4 (the paper's), prompts of {PROMPT_TOKENS} tokens.

Memory per GPU is `trainer.memory`'s estimate for each configuration's job options (the refusal a worker would
give is the same code). Step time = rollouts + training passes + collectives + weight sync, from the published
figures and the assumptions listed below; the 1536-token column shows its parts.

| configuration | GiB per GPU | fits 79.2 GiB | weights / grads+optimizer / KL reference / PRM | activations | vLLM | s/step at 1024 tok | s/step at 1536 tok (rollout + train + comm + sync) | RL stage, h |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Which configuration

**A: LoRA + DDP on all 8 GPUs with vLLM colocated**: `openrft.distributed.processes=8`, strategy `ddp` (the
default), `rl.vllm_mode` "auto" (the default) colocates, since this layout fits; it would give the rollouts a
server GPU of their own (layout B) only if colocating did not fit. Each GPU holds the 16 GB bf16 policy, a few
hundred MB of adapter state and vLLM's 30% share; the KL term costs no memory (the reference is the base with the
adapter off). Rollouts dominate the step (one decoding step per generated token), and colocating puts 8 engines on
them instead of 1: the server layout (B) spends a GPU on generation, decodes 64 sequences on it, and leaves the
other 7 idle while it does. TRL's own measurements point the same way (colocated 1.4-2x faster, see below).

- Full fine-tuning of 8B (not a job option yet; estimated here for when it is) needs its optimizer state
  sharded: ZeRO-3 (D, or `fsdp`) fits with room; ZeRO-2 (E) fits with the least, since the bf16 weights and the
  KL reference copy stay replicated next to vLLM's share; plain DDP (F) does not fit, and a worker refuses it
  before the job starts:

  > {refused}

- With the paper's 7B PRM loaded on every GPU (C) it still fits; the PRM's forward passes add to the training
  time. A PRM behind an endpoint (`prm.type=endpoint`) moves it off the training GPUs.
- Time is dominated by rollouts: shorter replies (`reasoning_effort`), fewer rollouts per prompt, or FP8 vLLM
  weights are the levers; more GPUs shrink the training passes and, colocated, the rollouts.

## Published figures

{chr(10).join(f"- {s}" for s in SOURCES)}

## Assumptions

{chr(10).join(f"- {a}" for a in ASSUMPTIONS)}
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed-plan.md").write_text(text)
    return {"setups": data, "sources": SOURCES, "assumptions": ASSUMPTIONS}


if __name__ == "__main__":
    write_plan()
    print((RESULTS / "distributed-plan.md").read_text())
