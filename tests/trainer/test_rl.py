"""GRPO stage internals: policy versions, the vLLM rollout path (with a stand-in engine), argument building."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer.rl import PolicyVersions, StatsBox, grpo_args, make_grpo_trainer, vllm_kwargs

GRADER = {
    "type": "string_check",
    "name": "g",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "like",
}


def test_vllm_arguments() -> None:
    colo = vllm_kwargs(
        mode="colocate", server_base_url=None, gpu_memory_utilization=0.4, max_model_length=4096
    )
    assert colo == {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": 0.4,
        "vllm_enable_sleep_mode": True,
        "vllm_tensor_parallel_size": 1,
        "vllm_max_model_length": 4096,
    }
    server = vllm_kwargs(
        mode="server",
        server_base_url="http://rollout:8000/",
        gpu_memory_utilization=0.3,
        max_model_length=None,
    )
    assert server == {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://rollout:8000"}
    with pytest.raises(ValueError, match="server base URL"):
        vllm_kwargs(mode="server", server_base_url=None, gpu_memory_utilization=0.3, max_model_length=None)
    # TRL accepts them (it imports vLLM only when the trainer starts).
    args = grpo_args(
        output_dir="/tmp/unused",
        batch_size=2,
        num_generations=4,
        learning_rate=1e-5,
        max_steps=3,
        max_completion_length=64,
        temperature=1.0,
        beta=0.0,
        loss_type="dapo",
        seed=1,
        use_cpu=True,
        vllm=server,
    )
    assert args.use_vllm and args.vllm_server_base_url == "http://rollout:8000"
    assert args.per_device_train_batch_size == 8 and args.num_generations == 4


def test_policy_versions_recognise_weights(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.lora import attach_adapter

    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model), rank=2, alpha=4, dropout=0.0)
    versions = PolicyVersions()
    versions.register(model, 0)
    assert versions.version_of(model) == 0
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.1)
    assert versions.version_of(model) is None  # weights no update produced: a stale or foreign policy
    versions.register(model, 1)
    assert versions.version_of(model) == 1


class FakeVLLM:
    """Stands in for TRL's VLLMGeneration: records weight syncs, returns fixed completions."""

    def __init__(self, tokenizer: Any) -> None:
        self.syncs = 0
        self.ids = [*tokenizer.encode("The answer is 7", add_special_tokens=False), tokenizer.eos_token_id]

    def sync_weights(self) -> None:
        self.syncs += 1

    def generate(self, prompts: list[Any], images: Any, num_generations: int, profiler: Any) -> Any:
        # TRL passes every prompt once per generation (the sampler repeats them): one completion each.
        comp = [list(self.ids) for _ in prompts]
        return None, comp, [[[-0.5] for _ in c] for c in comp], None


def test_vllm_rollout_path_tags_policy_versions(tiny_model: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.grading import Grader
    from trainer.lora import attach_adapter
    from trainer.rl import GraderReward

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model), rank=2, alpha=4, dropout=0.0)
    data = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": f"q{i}"}], "item_json": json.dumps({"answer": "7"})}
            for i in range(8)
        ]
    )
    box, versions = StatsBox(), PolicyVersions()
    with Grader(GRADER) as grader:
        trainer = make_grpo_trainer(
            model=model,
            reward_funcs=[GraderReward(grader, box, num_generations=2)],
            args=grpo_args(
                output_dir=str(tmp_path),
                batch_size=2,
                num_generations=2,
                learning_rate=1e-3,
                max_steps=3,
                max_completion_length=8,
                temperature=1.0,
                beta=0.0,
                loss_type="dapo",
                seed=1,
                use_cpu=True,
            ),
            train_dataset=data,
            processing_class=tok,
            stats_box=box,
            policy_versions=versions,
        )
        fake = FakeVLLM(tok)
        trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, fake, -1
        lags: list[Any] = []
        versions_seen: list[Any] = []

        from transformers import TrainerCallback

        class Collect(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                s = box.pop()
                lags.append(s.policy_lags)
                versions_seen.append(s.rollout_versions)

        trainer.add_callback(Collect())
        trainer.train()
    assert fake.syncs == 3  # the engine got the new weights before every step's rollouts
    assert versions_seen == [[0], [1], [2]]
    assert lags == [[0], [0], [0]]
