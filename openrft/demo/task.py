"""The demo's domain task: multiple-choice arithmetic with verifiable answers, generated deterministically.

Questions are small sums, differences and times-table products, each with four options: the answer and
three near misses (off by one or two, or a neighbouring product). The correct letter is spread evenly
over A-D. Train, validation and held-out test questions never share a problem.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABELS = ("A", "B", "C", "D")
TIMES = "\N{MULTIPLICATION SIGN}"
SYSTEM_PROMPT = (
    "Work out the answer briefly, then end with 'Answer: X' where X is the letter of the correct option."
)
# How the service writes a reference answer as a training response: its worked arithmetic, then the letter.
RESPONSE_TEMPLATE = "{reasoning}\n\nAnswer: {answer}"
# The OpenRFT multiple_choice grader: finds the chosen letter in the reply (boxed, "Answer: X", a lone letter)
# and compares it with the row's "answer" field.
GRADER: dict[str, Any] = {
    "type": "multiple_choice",
    "name": "choice",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "labels": list(LABELS),
}


@dataclass(frozen=True)
class Problem:
    left: int
    op: str
    right: int

    @property
    def value(self) -> int:
        if self.op == "+":
            return self.left + self.right
        if self.op == "-":
            return self.left - self.right
        return self.left * self.right

    @property
    def text(self) -> str:
        return f"What is {self.left} {self.op} {self.right}?"

    def near_misses(self) -> list[int]:
        v = self.value
        misses = [v - 1, v + 1, v - 2, v + 2]
        if self.op == TIMES:  # the classic slip: one row of the times table up or down
            misses = [self.left * (self.right - 1), self.left * (self.right + 1), *misses]
        return [m for m in dict.fromkeys(misses) if m >= 0 and m != v]


def all_problems() -> list[Problem]:
    problems = [Problem(a, "+", b) for a in range(2, 10) for b in range(2, 10)]
    problems += [Problem(a, "-", b) for a in range(10, 19) for b in range(2, 10) if a - b >= 1]
    problems += [Problem(a, TIMES, b) for a in range(2, 10) for b in range(2, 10)]
    return problems


def make_row(problem: Problem, correct: int, rng: random.Random) -> dict[str, Any]:
    """The row for ``problem`` with the answer as option number ``correct``."""
    misses = rng.sample(problem.near_misses()[:4], 3)
    values = [*misses[:correct], problem.value, *misses[correct:]]
    options = "\n".join(f"{label}. {value}" for label, value in zip(LABELS, values, strict=True))
    return {
        "messages": [{"role": "user", "content": f"{problem.text}\n{options}"}],
        "answer": LABELS[correct],
        "value": str(problem.value),
    }


@dataclass(frozen=True)
class DemoTask:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]

    def write(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, rows in (("train", self.train), ("validation", self.validation), ("test", self.test)):
            path = directory / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            paths[name] = path
        return paths


def make_task(n_train: int = 100, n_validation: int = 16, n_test: int = 30, *, seed: int = 0) -> DemoTask:
    """Disjoint splits drawn from the problem pool; the same arguments always give the same files."""
    rng = random.Random(seed)
    problems = all_problems()
    needed = n_train + n_validation + n_test
    if needed > len(problems):
        raise ValueError(f"the demo task has {len(problems)} distinct problems; asked for {needed}")
    rng.shuffle(problems)
    positions: list[int] = []
    for size in (n_train, n_validation, n_test):  # every letter equally often in each split
        split = [i % len(LABELS) for i in range(size)]
        rng.shuffle(split)
        positions += split
    rows = [make_row(p, pos, rng) for p, pos in zip(problems[:needed], positions, strict=True)]
    return DemoTask(
        train=rows[:n_train],
        validation=rows[n_train : n_train + n_validation],
        test=rows[n_train + n_validation :],
    )
