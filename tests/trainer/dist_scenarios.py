"""What the ranks of tests/trainer/test_distributed.py run under ``torch.distributed.run`` (a script, not a test).

``python dist_scenarios.py <scenario> <out_dir> [args]``; each rank writes ``<out_dir>/rank-<N>.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from trainer import distributed
from trainer.control import StopRequested
from trainer.interface import NullSink, StopRequest


def _write(out: Path, world: distributed.World, data: dict[str, Any]) -> None:
    (out / f"rank-{world.rank}.json").write_text(json.dumps({"rank": world.rank, **data}))


class _CountingSink(NullSink):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.saved: list[int] = []

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self.steps.append(int(data["step"]))

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        self.saved.append(step)


class _PauseAt:
    """Rank 0's Control: asks to pause from the ``at``-th poll on."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.polls = 0

    def poll(self) -> StopRequest | None:
        self.polls += 1
        return "pause" if self.polls >= self.at else None


def one_voice(out: Path) -> None:
    """Events from rank 0 only; a pause seen by rank 0 stops every rank after the same step; the helpers."""
    from trainer.checkpoints import CheckpointManager, atomic_dir, atomic_write_text

    world = distributed.current()
    distributed.ensure_group(world)
    raw = _CountingSink()
    sink = distributed.main_sink(raw, world)
    stopper = distributed.make_stopper(_PauseAt(3) if world.is_main else None, max_minutes=None, world=world)
    local_checks: list[Any] = []
    stopped_at, kind = None, None
    for step in range(1, 20):
        time.sleep(0.05 * (1 + world.rank))  # ranks reach the boundary at different times
        local_checks.append(stopper.requested(budget=False))  # inside a step: never a stop
        sink.metrics(f"step {step}", {"step": step})
        stop = stopper.requested(budget=True)
        if stop is not None:
            stopped_at, kind = step, stop.kind
            break
    shared = distributed.on_main(lambda: {"from": world.rank}, world=world, stopper=stopper)
    try:
        distributed.on_main(lambda: stopper.check(), world=world, stopper=stopper)
        main_stop = None
    except StopRequested as e:
        main_stop = e.kind
    gathered = distributed.gather_to_main(world.rank * 10, world)
    everyone = distributed.all_gather(f"r{world.rank}", world)
    atomic_write_text(out / "text.txt", f"written by {world.rank}")

    def save(tmp: Path) -> None:
        (tmp / f"part-{world.rank}").write_text("x")

    atomic_dir(out / "shared", save, every_rank=True, world=world)
    atomic_dir(out / "main", save, world=world)
    saved = _CountingSink()
    CheckpointManager(out / "ckpts", saved, keep=1).save(4, save, {"step": 4}, every_rank=True)
    distributed.barrier(world)
    _write(
        out,
        world,
        {
            "world_size": world.world_size,
            "stopped_at": stopped_at,
            "kind": kind,
            "events": raw.steps,
            "local_checks": [c is not None for c in local_checks],
            "shared": shared,
            "main_stop": main_stop,
            "gathered": gathered,
            "everyone": everyone,
            "checkpoint_events": saved.saved,
        },
    )


def allreduce(out: Path) -> None:
    import torch
    import torch.distributed as dist

    world = distributed.current()
    distributed.ensure_group(world)
    t = torch.ones(1)
    dist.all_reduce(t)
    _write(out, world, {"world_size": world.world_size, "sum": float(t.item())})


def hang(out: Path) -> None:
    """Ranks that never end on their own, in step with each other: what a kill must stop."""
    import torch
    import torch.distributed as dist

    distributed.bind_to_parent()
    world = distributed.current()
    distributed.ensure_group(world)
    (out / f"pid-{world.rank}").write_text(str(os.getpid()))
    t = torch.ones(1)
    while True:
        dist.all_reduce(t)
        time.sleep(0.05)


def train(out: Path, mode: str, model_dir: str) -> None:
    """The project's own SFT / GRPO builders on this rank's share of a fixed global batch."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.lora import attach_adapter, trainable_fingerprint
    from trainer.rl import PolicyVersions, StatsBox, grpo_args, make_grpo_trainer
    from trainer.sft import make_sft_trainer

    world = distributed.current()
    distributed.ensure_group(world)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = attach_adapter(AutoModelForCausalLM.from_pretrained(model_dir), rank=4, alpha=8, dropout=0.0)
    before = trainable_fingerprint(model)
    pairs = [(a, b) for a in range(2, 8) for b in range(3, 5)]
    hf_out = str(out / f"hf-{mode}-{world.world_size}-{world.rank}")
    if mode == "sft":
        examples = [
            {
                "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
                "completion": [{"role": "assistant", "content": f"The answer is {a + b}."}],
            }
            for a, b in pairs
        ]
        trainer = make_sft_trainer(
            model=model, tokenizer=tok, examples=examples, eval_examples=None, output_dir=hf_out,
            batch_size=distributed.per_rank(4, world), epochs=1, learning_rate=2e-3, max_length=64, seed=42,
            use_cpu=True, callbacks=[],
        )  # fmt: skip
    else:
        rows = [
            {"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "item_json": "{}"}
            for a, b in pairs
        ]

        def reward(prompts: list[Any], completions: list[Any], **kw: Any) -> list[float]:
            return [float(len(c[-1]["content"]) % 3) for c in completions]

        # 2 prompts x 4 rollouts per step in all, whatever the world size.
        args = grpo_args(
            output_dir=hf_out, batch_size=distributed.per_rank(2, world), num_generations=4, learning_rate=1e-3,
            max_steps=2, max_completion_length=8, temperature=1.0, beta=0.0, loss_type="dapo", seed=42,
            use_cpu=True,
        )  # fmt: skip
        trainer = make_grpo_trainer(
            model=model, args=args, reward_funcs=[reward], train_dataset=Dataset.from_list(rows),
            processing_class=tok, callbacks=[], stats_box=StatsBox(), policy_versions=PolicyVersions(),
        )  # fmt: skip
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    _write(
        out,
        world,
        {
            "steps": trainer.state.global_step,
            "losses": losses,
            "changed": trainable_fingerprint(trainer.model) != before,
            "fingerprint": trainable_fingerprint(trainer.model),
        },
    )


def lockstep(out: Path, model_dir: str) -> None:
    """Generation as with sharded weights: every forward is a collective (a stand-in for ZeRO-3's gather of each
    layer's weights), over 5 prompts on 2 ranks, 2 per batch. Unpadded, rank 1 (2 prompts, one call) would leave
    rank 0 (3 prompts, two calls) waiting in its second call's first forward for ever."""
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.generation import GenerationStats, generate

    world = distributed.current()
    distributed.ensure_group(world)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forwards = [0]

    def gather(module: Any, args: Any) -> None:
        dist.all_reduce(torch.ones(1))
        forwards[0] += 1

    model.register_forward_pre_hook(gather)
    prompts = [[{"role": "user", "content": f"What is {i} + 3?"}] for i in range(5)]
    mine, pads = distributed.padded_shard(prompts, world)
    stats = GenerationStats()
    outs = generate(
        model,
        tok,
        mine + pads,
        max_new_tokens=6,
        batch_size=2,
        stats=stats,
        synced_gpus=True,
        counted=len(mine),
    )
    _write(
        out,
        world,
        {
            "forwards": forwards[0],
            "mine": len(mine),
            "pads": len(pads),
            "outs": len(outs),
            "counted_tokens": stats.completion_tokens,
            "calls": stats.calls,
        },
    )


if __name__ == "__main__":
    scenario, out_dir, *rest = sys.argv[1:]
    target = Path(out_dir)
    if scenario == "one_voice":
        one_voice(target)
    elif scenario == "allreduce":
        allreduce(target)
    elif scenario == "hang":
        hang(target)
    elif scenario == "lockstep":
        lockstep(target, *rest)
    elif scenario == "train":
        train(target, *rest)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
