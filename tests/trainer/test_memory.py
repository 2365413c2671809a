"""The memory estimate against published figures, the strategies' sharding, and the refusal of a job that
cannot fit. Models are configs only (no weights): an 8B Llama-3-shaped one and the tests' tiny model.

Published figures the numbers are checked against:
- Llama-3-8B has 8.03B parameters (Meta's model card), so its bf16 weights are about 16 GB (2 bytes each).
- Mixed-precision Adam needs 16 bytes per parameter of model states: 2 (16-bit weights) + 2 (16-bit gradients)
  + 12 (fp32 master weights and both Adam moments); the ZeRO paper's example is 7.5B parameters -> 120 GB
  (Rajbhandari et al. 2020, section 3.1). ZeRO-3 divides all of it by the number of devices.
- PEFT reports 20,971,520 trainable parameters for LoRA r=8 on every linear layer of Llama-3-8B.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from trainer.config import Hardware, parse_config, plan_run
from trainer.device import Device
from trainer.interface import TrainerError
from trainer.memory import (
    GIB,
    ModelShape,
    Workload,
    _formula,
    check_fits,
    estimate_memory,
    refuse_if_too_big,
)

H100 = 80 * GIB


@pytest.fixture(scope="module")
def llama8b() -> ModelShape:
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    )
    shape = ModelShape.of(config)
    assert shape == _formula(config)  # the meta-device count and the Llama formula agree exactly
    return shape


def gpu_rl(**kw: object) -> Workload:
    """The GPU plan's RL shape: 8 prompts x 8 rollouts of 512 + 1024 tokens; SFT 8 sequences of 1536."""
    base = Workload(
        device="cuda",
        device_bytes=H100,
        sft_batch=8,
        sft_tokens=1536,
        rl_batch=8,
        num_generations=8,
        rl_tokens=1536,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def states(est: object) -> int:
    p = est.worst  # type: ignore[attr-defined]
    return int(p.weights + p.gradients + p.optimizer)


def test_an_8b_llama_counts_as_published(llama8b: ModelShape) -> None:
    assert llama8b.parameters == pytest.approx(8.03e9, rel=1e-3)
    assert llama8b.lora_parameters(8) == 20_971_520
    lora = estimate_memory(llama8b, gpu_rl())
    assert lora.trainable == 20_971_520
    assert lora.worst.weights == pytest.approx(16.06e9, rel=0.01)  # bf16 base + the fp32 adapter
    # The adapter's 16 bytes a parameter are noise next to the base: LoRA's states are the weights.
    assert states(lora) < 16.5e9


def test_full_finetuning_needs_the_zero_papers_16_bytes_per_parameter(llama8b: ModelShape) -> None:
    p = llama8b.parameters
    for strategy in ("deepspeed_zero2", "deepspeed_zero3", "fsdp"):
        one = estimate_memory(llama8b, gpu_rl(strategy=strategy, lora_rank=None))
        gathered = (
            one.worst.weights - p * (4 if strategy == "fsdp" else 2) if strategy != "deepspeed_zero2" else 0
        )
        assert states(one) - gathered == 16 * p, strategy  # ~128 GB: an 8B model fits no single 80 GB GPU
    # Plain DDP trains the weights in their bf16: bf16 gradients and moments, no fp32 master (8 bytes).
    assert states(estimate_memory(llama8b, gpu_rl(lora_rank=None))) == 8 * p
    # The CPU trains in fp32: 4 + 4 + 8.
    cpu = Workload(device="cpu", lora_rank=None, sft_batch=1, sft_tokens=16)
    assert states(estimate_memory(llama8b, cpu)) == 16 * p


def test_zero3_on_8_devices_divides_the_sharded_parts_by_8(llama8b: ModelShape) -> None:
    full = dict(strategy="deepspeed_zero3", lora_rank=None, beta=0.04)
    one = estimate_memory(llama8b, gpu_rl(**full)).phases[-1]
    eight = estimate_memory(llama8b, gpu_rl(world_size=8, **full)).phases[-1]
    assert eight.gradients == one.gradients // 8 and eight.optimizer == one.optimizer // 8
    assert eight.reference == one.reference // 8  # TRL shards the KL reference model with the policy
    # Weights: their shard, plus the layers gathered for the computation (about 3 GB here), on every rank.
    gathered = one.weights - llama8b.parameters * 2
    assert 2e9 < gathered < 4e9
    assert eight.weights - gathered == (one.weights - gathered) // 8
    assert eight.peak < one.peak / 2
    # ZeRO-2 shards gradients and optimizer state only; DDP nothing.
    z2 = estimate_memory(llama8b, gpu_rl(world_size=8, strategy="deepspeed_zero2", lora_rank=None)).phases[-1]
    assert z2.weights == llama8b.parameters * 2 and z2.optimizer == 12 * llama8b.parameters // 8
    ddp = estimate_memory(llama8b, gpu_rl(world_size=8, lora_rank=None)).phases[-1]
    assert ddp.weights == llama8b.parameters * 2 and ddp.optimizer == 4 * llama8b.parameters


def test_reference_model_and_rollout_engine(llama8b: ModelShape) -> None:
    # With LoRA the KL reference is the base with the adapter off: no copy. Full fine-tuning holds one.
    assert estimate_memory(llama8b, gpu_rl(beta=0.04)).worst.reference == 0
    assert (
        estimate_memory(llama8b, gpu_rl(beta=0.04, lora_rank=None)).phases[-1].reference
        == 2 * llama8b.parameters
    )
    colocate = estimate_memory(llama8b, gpu_rl(rollout="vllm_colocate", vllm_share=0.3)).phases[-1]
    assert colocate.rollout == int(0.3 * H100)
    # vLLM sleeps while the trainer computes: the stage needs the larger of the two, not their sum.
    assert colocate.peak == (
        colocate.weights + colocate.gradients + colocate.optimizer + colocate.runtime
    ) + max(colocate.activations, colocate.rollout)
    assert estimate_memory(llama8b, gpu_rl(rollout="vllm_server")).phases[-1].rollout == 0
    # The micro-batch is the one trainer.device plans: 8 of 1536 tokens (~3.2 GB each) within 30% of 80 GiB.
    assert (colocate.micro_batch, colocate.accumulation) == (8, 8)


def test_a_job_that_cannot_fit_is_refused_with_the_numbers(llama8b: ModelShape) -> None:
    est = estimate_memory(llama8b, gpu_rl(lora_rank=None, rollout="vllm_colocate"))
    with pytest.raises(TrainerError) as e:
        check_fits(est, H100)
    msg = e.value.message
    assert e.value.code == "insufficient_memory"
    assert f"about {est.per_device / GIB:.1f} GiB per GPU" in msg and "its GPU has 80.0 GiB" in msg
    assert "optimizer" in msg and "activations" in msg
    assert "LoRA adapter instead of the full weights" in msg and "'deepspeed_zero3'" in msg
    assert "fits" in msg  # at least one remedy is enough on its own


def test_refuse_if_too_big_from_the_plan(llama8b: ModelShape) -> None:
    cfg = parse_config("reinforcement", {"batch_size": 8}, {"rl": {"rollout_engine": "vllm"}})
    plan = plan_run(cfg, n_train=100, hardware=Hardware(gpu=True, cpu_count=16))
    t4 = Device("cuda", fp16=True, total_bytes=16 * GIB)
    with pytest.raises(TrainerError, match="does not fit its devices") as e:
        refuse_if_too_big(llama8b, plan, cfg.openrft, world_size=1, device=t4)
    assert e.value.code == "insufficient_memory" and "vllm_mode 'server'" in e.value.message
    est = refuse_if_too_big(
        llama8b, plan, cfg.openrft, world_size=8, device=Device("cuda", bf16=True, total_bytes=H100)
    )
    assert est.workload.rollout == "vllm_colocate" and est.per_device < H100


def test_the_cpu_counts_every_process_against_the_machine(tiny_model: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model)
    cfg = parse_config("reinforcement", None, {"distributed": {"processes": 2}})
    plan = plan_run(cfg, n_train=24, hardware=Hardware(gpu=False, cpu_count=2))
    cpu = Device("cpu")
    est = refuse_if_too_big(config, plan, cfg.openrft, world_size=2, device=cpu)  # this machine's memory
    assert est.total == 2 * est.per_device < 3 * GIB  # the tiny model fits anywhere
    assert est.workload.strategy == "ddp" and est.worst.weights < 10**6
    with pytest.raises(TrainerError) as e:
        refuse_if_too_big(
            config, plan, cfg.openrft, world_size=2, device=cpu, available_bytes=est.per_device + 1
        )
    assert "2 processes x" in e.value.message and "fewer processes" in e.value.message
