"""Grader throughput: samples/second of string_check, text_similarity and python graders at batch 64 / 1024.

    python -m bench.graders [--repeats 3] [--out bench/results]

Each grader gets one warm engine (a warm-up batch first, so model loading and the sandbox's start are not
counted; the python sandbox's cold start is reported separately). Samples are synthetic reasoning-style
answers of ~120 words graded against short references, the shape of an RL step's completions. The best of
``--repeats`` runs is reported (the machine is shared; the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

from trainer.graders import GraderEngine, GraderSettings

BATCH_SIZES = (64, 1024)
# fmt: off
WORDS = [
    "the", "answer", "is", "because", "we", "first", "compute", "sum", "of", "both", "terms", "then", "check",
    "each", "option", "carefully", "result", "value", "equals", "step", "reason", "therefore", "so", "correct",
    "wrong", "number", "total", "half", "twice", "three", "four", "five", "kitten", "carpet", "quickly",
]
# fmt: on

PYTHON_SOURCE = """
import re

def grade(sample, item):
    found = re.findall(r"answer is ([A-D])", sample["output_text"])
    return 1.0 if found and found[-1] == item["answer"] else 0.0
"""

GRADERS: dict[str, dict[str, Any]] = {
    "string_check": {
        "type": "string_check",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": "like",
    },
    "text_similarity/fuzzy_match": {
        "type": "text_similarity",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.reference }}",
        "evaluation_metric": "fuzzy_match",
    },
    "text_similarity/rouge_l": {
        "type": "text_similarity",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.reference }}",
        "evaluation_metric": "rouge_l",
    },
    "text_similarity/meteor": {
        "type": "text_similarity",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.reference }}",
        "evaluation_metric": "meteor",
    },
    "python": {"type": "python", "source": PYTHON_SOURCE},
}


def make_batch(n: int, seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    rng = random.Random(seed)
    samples, items = [], []
    for _ in range(n):
        answer = rng.choice("ABCD")
        words = [rng.choice(WORDS) for _ in range(rng.randint(80, 160))]
        samples.append(" ".join(words) + f". So the answer is {rng.choice('ABCD')}.")
        items.append({"answer": answer, "reference": " ".join(rng.choice(WORDS) for _ in range(20))})
    return samples, items


def measure(name: str, spec: dict[str, Any], settings: GraderSettings, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {"grader": name}
    start = time.perf_counter()
    with GraderEngine(spec, settings) as engine:
        warm = make_batch(8, seed=0)
        result = engine.grade_batch(*warm)
        row["warmup_s"] = round(time.perf_counter() - start, 3)
        assert not any(result.sample_errors), result.error_details
        for size in BATCH_SIZES:
            samples, items = make_batch(size, seed=size)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                result = engine.grade_batch(samples, items)
                times.append(time.perf_counter() - t0)
                assert len(result.scores) == size and not any(result.sample_errors), result.error_details
            row[f"batch_{size}"] = {
                "best_s": round(min(times), 4),
                "median_s": round(statistics.median(times), 4),
                "samples_per_s": round(size / min(times), 1),
            }
    return row


def python_cold_start(settings: GraderSettings, repeats: int) -> float:
    """Seconds from a new engine to the first python score (bwrap + interpreter + the grader's imports)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with GraderEngine(GRADERS["python"], settings) as engine:
            engine.grade_batch(["the answer is A"], [{"answer": "A"}])
        times.append(time.perf_counter() - t0)
    return round(min(times), 3)


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Grader throughput",
        "",
        f"`python -m bench.graders` on {report['machine']} (1-minute load average "
        f"{report['load_average_1m_at_start']} at start); best of {report['repeats']} runs, samples/second "
        "(~120-word answers). One engine per grader, warmed up first; python graders in one warm sandbox.",
        "",
        "| grader | batch 64 | batch 1024 |",
        "|---|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['grader']} | {row['batch_64']['samples_per_s']:,.0f} | {row['batch_1024']['samples_per_s']:,.0f} |"
        )
    lines += [
        "",
        f"Python grader cold start (bwrap jail + interpreter, first score): {report['python_cold_start_s']} s; "
        "the warm process is then reused for every sample.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = GraderSettings()
    load_at_start = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    results = []
    for name, spec in GRADERS.items():
        row = measure(name, spec, settings, args.repeats)
        print(json.dumps(row))
        results.append(row)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1m_at_start": round(load_at_start, 2),
        "repeats": args.repeats,
        "results": results,
        "python_cold_start_s": python_cold_start(settings, args.repeats),
        "python_sandbox_workers": settings.sandbox_workers,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graders.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "graders.md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
