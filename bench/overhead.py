"""Overhead benchmark: seconds per RL step of the OpenRFT pipeline vs a bare TRL GRPOTrainer.

    python -m bench.overhead [--model smollm2|tiny] [--steps 6] [--rounds 2]

Both sides train the same LoRA on the same model, data (the bench's multiple-choice arithmetic rows, with the
same prompts), grader and GRPO settings (2 prompts x 4 rollouts of at most 64 tokens per step). The bare side is
``trl.GRPOTrainer`` with a reward function that calls the grader engine directly; the pipeline side is
``trainer.run_job`` (RL only, no evaluation), which adds per-step statistics, policy-version fingerprints, stop
polling on every forward, events, the results CSV and the run state. Rounds alternate bare / pipeline so both see
the same machine load; per side the median step time is taken over all steps but the first of each round (warm-up)
and the last (the pipeline writes its final checkpoint there). Target: ratio <= 1.05.

Writes ``bench/results/overhead.json`` and ``.md``; the load average is recorded (the CPU is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.models import CHOICES, bench_model, model_cache
from trainer.config import _EFFORT_TOKENS

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Settings:
    batch_size: int = 2
    num_generations: int = 4
    max_completion_length: int = _EFFORT_TOKENS[False]["low"]
    """The pipeline's rollout budget for ``reasoning_effort="low"`` on CPU: the bare side gets the same."""
    learning_rate: float = 5e-5
    rank: int = 8


SETTINGS = Settings()


def _rows(n: int) -> list[dict[str, Any]]:
    from bench.quality import make_task

    return make_task("arith", n, 0, 0, seed=0)["train"]


def bare_trl(
    model_dir: str,
    rows: list[dict[str, Any]],
    prompts: list[Any],
    steps: int,
    out: Path,
    lengths: list[float],
) -> list[float]:
    """Per-step seconds of a plain GRPOTrainer + LoRA with the grader engine as reward."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from bench.quality import GRADER
    from trainer.graders import GraderEngine, validate_grader

    engine = GraderEngine(validate_grader(GRADER))

    def reward(
        prompts: list[Any], completions: list[Any], item_json: list[str], **kw: Any
    ) -> list[float | None]:
        items = [json.loads(x) for x in item_json]
        return list(engine.grade_batch([c[-1]["content"] for c in completions], items).scores)

    times: list[float] = []

    class Clock(TrainerCallback):
        """Step time as the pipeline counts it: from one step's log to the next (logging included)."""

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_log(self, *a: Any, logs: dict[str, Any] | None = None, **k: Any) -> None:
            if logs and "loss" in logs:
                now = time.perf_counter()
                times.append(now - self.t)
                self.t = now
                lengths.append(float(logs.get("completions/mean_length", float("nan"))))

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    s = SETTINGS
    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=s.batch_size * s.num_generations,
        num_generations=s.num_generations,
        max_completion_length=s.max_completion_length,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        disable_tqdm=True,
        beta=0.0,
        loss_type="dapo",
        seed=1,
        data_seed=1,
        mask_truncated_completions=False,
    )
    data = Dataset.from_list(
        [
            {"prompt": p, "item_json": json.dumps({"answer": r["answer"]})}
            for p, r in zip(prompts, rows, strict=True)
        ]
    )
    peft = LoraConfig(r=s.rank, lora_alpha=2 * s.rank, target_modules="all-linear", task_type="CAUSAL_LM")
    with engine:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=args,
            train_dataset=data,
            processing_class=tok,
            peft_config=peft,
            callbacks=[Clock()],
        )
        trainer.train()
    return times


def pipeline(
    model_source: str, train_file: Path, steps: int, work: Path, cache: Path, lengths: list[float]
) -> list[float]:
    """Per-step seconds of the same RL through trainer.run_job (from its step events)."""
    from bench.quality import GRADER, PAPER_PROMPT
    from trainer import JobSpec, run_job
    from trainer.interface import NeverStop, NullSink

    times: list[float] = []
    last = [0.0]

    class Sink(NullSink):
        """Wall time between consecutive RL step events: everything the pipeline does per step is inside."""

        def message(self, text: str, *, level: str = "info") -> None:
            if text.startswith("RL (GRPO)"):
                last[0] = time.perf_counter()

        def metrics(self, text: str, data: dict[str, Any]) -> None:
            if data.get("stage") == "rl":
                now = time.perf_counter()
                times.append(now - last[0])
                last[0] = now
                lengths.append(float(data.get("completion_tokens_mean") or float("nan")))

    s = SETTINGS
    spec = JobSpec(
        job_id="bench-overhead",
        method="reinforcement",
        base_model="bench",
        model_source=model_source,
        training_file=train_file,
        grader=GRADER,
        seed=1,
        cache_dir=cache,
        hyperparameters={"batch_size": s.batch_size, "reasoning_effort": "low"},
        openrft={
            "system_prompt": PAPER_PROMPT,
            "sft": {"enabled": False},
            "lora_rank": s.rank,
            "rl": {"max_steps": steps, "num_generations": s.num_generations},
            "eval": {"at_start": False},
        },
    )
    run_job(spec, Sink(), NeverStop(), work)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", choices=CHOICES, default="smollm2")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from trainer.pipeline import _quiet_libraries

    _quiet_libraries()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from bench.quality import PAPER_PROMPT
    from trainer.data import Row
    from trainer.models import load_tokenizer
    from trainer.prompts import build_prompt

    tmp = Path(tempfile.mkdtemp(prefix="openrft-overhead-"))
    source, model_dir = bench_model(args.model, tmp)
    load_tokenizer(model_dir)
    rows = _rows(100)
    train = tmp / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The bare trainer gets exactly the prompts the pipeline builds (system prompt + question).
    prompts = [
        build_prompt(Row(index=i, messages=r["messages"], item={}), system_prompt=PAPER_PROMPT)
        for i, r in enumerate(rows)
    ]
    load0 = os.getloadavg()[0]
    bare: list[list[float]] = []
    ours: list[list[float]] = []
    bare_len: list[float] = []  # mean completion tokens per step: same budget, so similar lengths
    ours_len: list[float] = []
    for k in range(args.rounds):
        bare.append(bare_trl(model_dir, rows, prompts, args.steps, tmp / f"bare{k}", bare_len))
        ours.append(pipeline(source, train, args.steps, tmp / f"pipe{k}", model_cache(), ours_len))
        print(
            f"round {k}: bare {[round(t, 2) for t in bare[-1]]}  pipeline {[round(t, 2) for t in ours[-1]]}",
            flush=True,
        )

    def core(rounds: list[list[float]]) -> list[float]:
        return [t for r in rounds for t in r[1:-1]]

    b, o = statistics.median(core(bare)), statistics.median(core(ours))
    result = {
        "model": args.model,
        "settings": asdict(SETTINGS),
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "bare_trl_s_per_step": round(b, 3),
        "pipeline_s_per_step": round(o, 3),
        "ratio": round(o / b, 3),
        "completion_tokens_mean": {
            "bare": round(statistics.fmean(bare_len), 1),
            "pipeline": round(statistics.fmean(ours_len), 1),
        },
        "target": 1.05,
        "bare_steps": bare,
        "pipeline_steps": ours,
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "command": "python -m bench.overhead " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "overhead.md").write_text(
        f"# RL step overhead: pipeline vs bare TRL GRPOTrainer\n\n"
        f"Model {args.model}, {SETTINGS.batch_size} prompts x {SETTINGS.num_generations} rollouts of at most "
        f"{SETTINGS.max_completion_length} tokens, LoRA r={SETTINGS.rank}, {args.rounds} alternating rounds of "
        f"{args.steps} steps (median over steps 2..{args.steps - 1} of each round). CPU: {os.cpu_count()} cores, "
        f"shared (load average {result['load_average'][0]} -> {result['load_average'][1]}).\n\n"
        f"| side | s/step (median) | completion tokens (mean) |\n|---|---|---|\n"
        f"| bare TRL GRPOTrainer | {b:.3f} | {result['completion_tokens_mean']['bare']} |\n"
        f"| OpenRFT pipeline | {o:.3f} | {result['completion_tokens_mean']['pipeline']} |\n\n"
        f"Ratio pipeline / bare: **{o / b:.3f}** (target <= 1.05). Command: `{result['command']}`.\n"
    )
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_steps")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
