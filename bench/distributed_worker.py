"""One rank of ``bench.distributed``: run under ``torch.distributed.run`` by that bench, not by hand.

    python -m bench.distributed_worker <sft|grpo> <model_dir> <out.json> <steps>

Builds the step the way the pipeline does (``trainer.lora.attach_adapter``, ``trainer.sft.make_sft_trainer``,
``trainer.rl.grpo_args`` + ``make_grpo_trainer``) on this rank's share of a fixed global batch
(the builders' ``world_size``, as the pipeline passes it), so every world size does the same work per step, and times each optimizer
step from one step end to the next. Rank 0 writes the timings.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

SFT_BATCH = 4
"""Sequences per SFT step, all ranks together (the CPU plan's SFT batch)."""
RL_PROMPTS = 2
"""Prompts per GRPO step, all ranks together (the CPU plan's RL batch), each with NUM_GENERATIONS rollouts."""
NUM_GENERATIONS = 4
MAX_COMPLETION = 64
"""The CPU plan's rollout budget at reasoning_effort "low"."""


def _rows(n: int) -> list[dict[str, Any]]:
    from bench.quality import PAPER_PROMPT, make_task
    from trainer.data import Row
    from trainer.prompts import build_prompt

    out = []
    for i, r in enumerate(make_task("arith", n, 0, 0, seed=0)["train"]):
        prompt = build_prompt(Row(index=i, messages=r["messages"], item={}), system_prompt=PAPER_PROMPT)
        out.append({"prompt": prompt, "answer": r["answer"], "value": r["value"]})
    return out


def main(argv: list[str]) -> None:
    mode, model_dir, out_file, steps_arg = argv
    steps = int(steps_arg)
    import datasets
    import torch
    import transformers
    from datasets import Dataset
    from transformers import TrainerCallback

    from trainer import distributed
    from trainer.lora import attach_adapter
    from trainer.models import load_model, load_tokenizer

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    world = distributed.current()
    distributed.ensure_group(world)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_dir)
    model = attach_adapter(load_model(model_dir), rank=8, alpha=16, dropout=0.0)
    ends: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())

        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())

        def on_log(self, *a: Any, logs: dict[str, Any] | None = None, **k: Any) -> None:
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    work = str(Path(out_file).parent / f"hf-{mode}-{world.world_size}-{world.rank}")
    grading: Any = contextlib.nullcontext()
    # As the pipeline passes them (RunContext.training_world): batches stay global, each rank takes its share.
    spread: dict[str, Any] = {}
    if world.distributed:
        spread = {"world_size": world.world_size, "strategy": distributed.strategy_args("ddp")}
    if mode == "sft":
        from trainer.sft import make_sft_trainer

        rows = _rows(steps * SFT_BATCH)
        examples = [
            {
                "prompt": r["prompt"],
                "completion": [
                    {
                        "role": "assistant",
                        "content": f"The value is {r['value']}.\nThe correct answer is: \\boxed{{{r['answer']}}}",
                    }
                ],
            }
            for r in rows
        ]
        trainer = make_sft_trainer(
            model=model, tokenizer=tokenizer, examples=examples, eval_examples=None, output_dir=work,
            batch_size=SFT_BATCH, epochs=1, learning_rate=2e-4, max_length=512,
            seed=42, use_cpu=True, callbacks=[Clock()], **spread,
        )  # fmt: skip
    else:
        from bench.quality import GRADER
        from trainer.graders import GraderEngine, validate_grader
        from trainer.rl import PolicyVersions, StatsBox, grpo_args, make_grpo_trainer

        engine = grading = GraderEngine(validate_grader(GRADER))

        def reward(
            prompts: list[Any], completions: list[Any], answer: list[str], **kw: Any
        ) -> list[float | None]:
            items = [{"answer": a} for a in answer]
            return list(engine.grade_batch([c[-1]["content"] for c in completions], items).scores)

        args = grpo_args(
            output_dir=work, batch_size=RL_PROMPTS, num_generations=NUM_GENERATIONS,
            learning_rate=5e-5, max_steps=steps, max_completion_length=MAX_COMPLETION, temperature=1.0, beta=0.0,
            loss_type="dapo", seed=42, use_cpu=True, **spread,
        )  # fmt: skip
        data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in _rows(100)])
        trainer = make_grpo_trainer(
            model=model, args=args, reward_funcs=[reward], train_dataset=data, processing_class=tokenizer,
            callbacks=[Clock()], stats_box=StatsBox(), policy_versions=PolicyVersions(),
        )  # fmt: skip
    with grading:
        trainer.train()
    if world.is_main:
        step_s = [b - a for a, b in itertools.pairwise(ends)]
        Path(out_file).write_text(
            json.dumps(
                {
                    "mode": mode,
                    "world_size": world.world_size,
                    "threads_per_rank": torch.get_num_threads(),
                    "steps": trainer.state.global_step,
                    "step_s": step_s,
                    "completion_tokens_mean": lengths,
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
