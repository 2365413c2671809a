"""Distributed benchmark: seconds per SFT step and per RL (GRPO) step with 1 and 2 processes, side by side.

    python -m bench.distributed [--model tiny|smollm2] [--sft-steps 6] [--rl-steps 5] [--processes 1,2]
                                [--plan-only]

Each world runs the project's own builders (``trainer.lora.attach_adapter``, ``trainer.sft.make_sft_trainer``,
``trainer.rl.grpo_args`` + ``make_grpo_trainer``) in ``bench/distributed_worker.py``: 2 processes under
``python -m torch.distributed.run`` (gloo, the cores split between ranks by ``trainer.distributed.launch_env``),
1 process as a plain process, as the pipeline runs it. The global batch is the
same for every world (SFT 4 sequences; GRPO 2 prompts x 4 rollouts of at most 64 tokens, the CPU plan's), each
rank training its share, so the worlds do the same work per step. The first step of each run is warm-up and
left out; mean and spread are over the others.

On a CPU with 2 cores, 2 processes share the cores 1 and 1: the point is that the distributed path is correct
and what its overhead is, not a speed-up. ``bench/distributed_plan.py`` (written with every run) is the
paper-scale plan for 8 GPUs.

Writes ``bench/results/distributed.json`` and ``.md`` (one section per model, each run replacing its model's)
and ``bench/results/distributed-plan.md``; the load average is recorded (the CPU is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.distributed_plan import write_plan
from bench.distributed_worker import MAX_COMPLETION, NUM_GENERATIONS, RL_PROMPTS, SFT_BATCH
from bench.models import CHOICES, bench_model

RESULTS = Path(__file__).parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_world(mode: str, model_dir: str, processes: int, steps: int, work: Path) -> dict[str, Any]:
    """One launch of the worker on ``processes`` ranks; rank 0's timings. One process runs as a plain process,
    as the pipeline does (under torchrun, HF would wrap even a world of one in DDP)."""
    from trainer.distributed import Launch, launch_env, run_distributed

    out = work / f"{mode}-{processes}.json"
    args = [mode, model_dir, str(out), str(steps)]
    launch = Launch(processes=processes, master_port=_free_port())
    t0 = time.perf_counter()
    if processes == 1:
        cmd = [sys.executable, "-m", "bench.distributed_worker", *args]
        rc = subprocess.run(cmd, env=launch_env(launch), check=False).returncode
    else:
        rc = run_distributed(args, launch, module="bench.distributed_worker")
    if rc != 0:
        raise SystemExit(f"{mode} on {processes} process(es) failed (exit status {rc})")
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - t0  # launch, imports and model load included
    return result


def _stats(run: dict[str, Any]) -> dict[str, Any]:
    timed = run["step_s"][1:]  # the first step pays one-off costs (allocator, caches, DDP's first buckets)
    return {
        "mean_s": round(statistics.fmean(timed), 3),
        "stdev_s": round(statistics.stdev(timed), 3) if len(timed) > 1 else 0.0,
        "min_s": round(min(timed), 3),
        "max_s": round(max(timed), 3),
        "timed_steps": len(timed),
        "warmup_s": round(run["step_s"][0], 3),
        "threads_per_rank": run["threads_per_rank"],
        "completion_tokens_mean": (
            round(statistics.fmean(run["completion_tokens_mean"][1:]), 1)
            if len(run["completion_tokens_mean"]) > 1
            else None
        ),
        "wall_s": round(run["wall_s"], 1),
        "step_s": [round(t, 3) for t in run["step_s"]],
    }


def _section(model: str, r: dict[str, Any]) -> str:
    lines = [
        f"## {model}\n",
        f"{r['date']}, {r['cpus']} CPU cores (shared; load average {r['load_average'][0]} -> "
        f"{r['load_average'][1]}). Command: `{r['command']}`.\n",
        "| stage | processes | threads per rank | s/step (mean) | spread (stdev; min-max) | timed steps | "
        "rollout tokens (mean) | x vs 1 process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, label in (("sft", "SFT"), ("grpo", "RL (GRPO)")):
        runs = r["runs"][mode]
        base = runs.get("1", {}).get("mean_s")
        for n, s in sorted(runs.items(), key=lambda kv: int(kv[0])):
            ratio = f"{s['mean_s'] / base:.2f}" if base else "-"
            tokens = s["completion_tokens_mean"] if s["completion_tokens_mean"] is not None else "-"
            lines.append(
                f"| {label} | {n} | {s['threads_per_rank']} | {s['mean_s']:.3f} | {s['stdev_s']:.3f}; "
                f"{s['min_s']:.3f}-{s['max_s']:.3f} | {s['timed_steps']} | {tokens} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def write_results(model: str, result: dict[str, Any]) -> None:
    path = RESULTS / "distributed.json"
    everything = json.loads(path.read_text()) if path.exists() else {}
    everything[model] = result
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(everything, indent=1))
    header = f"""# One job on 1 and 2 processes: seconds per step

`python -m bench.distributed` runs the project's SFT and GRPO builders in 1 process (plain, as the pipeline runs
it) and in 2 under `torch.distributed.run` (gloo), the same global batch in each (SFT {SFT_BATCH} sequences; GRPO {RL_PROMPTS} prompts x
{NUM_GENERATIONS} rollouts of at most {MAX_COMPLETION} tokens), each rank training its share; LoRA r=8, fp32, CPU.
Step time is from one optimizer step's end to the next (rollouts, grading, forward, backward, the gradient
all-reduce, the optimizer); the first step is warm-up and not counted.

**On this machine's 2 CPU cores the point is correctness and overhead, not speed**: 2 processes get 1 core each
(the same 2 cores in all), so the best they can do is match 1 process; what they add is the all-reduce of the
adapter's gradients, the second copy of the model and Python's per-rank overhead. A ratio near 1 says the
distributed path costs little; the speed-up comes from more devices (see `distributed-plan.md` for 8 GPUs).
A ratio below 1 does not mean the cores got faster: the likely causes are that one process's 2 intra-op threads
use the cores less fully than two single-threaded ranks do on these small matrices, and that generation's
per-token overhead (Python, sampling, cache bookkeeping) overlaps across two ranks. Not measured further here;
the CPU is shared (load average below), so read the spread too.
Rollouts differ between the worlds (each rank samples with its own generator), so GRPO steps may generate
different lengths: the mean is shown, and a shorter mean accounts for part of a lower step time.

"""
    (RESULTS / "distributed.md").write_text(
        header + "\n".join(_section(m, everything[m]) for m in sorted(everything))
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.distributed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", choices=CHOICES, default="tiny")
    ap.add_argument("--sft-steps", type=int, default=6)
    ap.add_argument("--rl-steps", type=int, default=5)
    ap.add_argument("--processes", default="1,2", help="comma-separated world sizes")
    ap.add_argument("--plan-only", action="store_true", help="only rewrite distributed-plan.md")
    args = ap.parse_args(argv)
    write_plan()
    if args.plan_only:
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see trainer.run_job: the CPU is shared
    worlds = [int(n) for n in args.processes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="openrft-distributed-"))
    _, model_dir = bench_model(args.model, work)  # converted once, before the ranks start
    load0 = os.getloadavg()[0]
    runs: dict[str, dict[str, Any]] = {"sft": {}, "grpo": {}}
    for mode, steps in (("sft", args.sft_steps), ("grpo", args.rl_steps)):
        for n in worlds:
            runs[mode][str(n)] = _stats(run_world(mode, model_dir, n, steps, work))
            s = runs[mode][str(n)]
            print(
                f"{mode} x{n}: {s['mean_s']:.3f} s/step (stdev {s['stdev_s']:.3f}) {s['step_s']}", flush=True
            )
    result = {
        "model": args.model,
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            "sft_batch": SFT_BATCH,
            "rl_prompts": RL_PROMPTS,
            "num_generations": NUM_GENERATIONS,
            "max_completion_length": MAX_COMPLETION,
            "lora_rank": 8,
            "sft_steps": args.sft_steps,
            "rl_steps": args.rl_steps,
        },
        "runs": runs,
        "ratio_2_vs_1": {
            m: round(r["2"]["mean_s"] / r["1"]["mean_s"], 3) for m, r in runs.items() if "1" in r and "2" in r
        },
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "command": "python -m bench.distributed " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write_results(args.model, result)
    print(json.dumps({k: result[k] for k in ("model", "ratio_2_vs_1", "load_average")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
