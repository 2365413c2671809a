"""The quality benchmark's generated tasks: disjoint splits, balanced letters, verifiably correct answers."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from bench.quality import TASKS, TIMES, make_task
from trainer.data import parse_choices


@pytest.mark.parametrize("name", list(TASKS))
def test_tasks_are_well_formed(name: str) -> None:
    task = make_task(name, 100, 40, 100, seed=0)
    questions = {s: [r["messages"][0]["content"].split("\n")[0] for r in rows] for s, rows in task.items()}
    assert not set(questions["train"]) & set(questions["test"]) and not set(questions["valid"]) & set(
        questions["test"]
    )
    assert Counter(r["answer"] for r in task["test"]) == Counter({"A": 25, "B": 25, "C": 25, "D": 25})
    for rows in task.values():
        for r in rows:
            ch = parse_choices(r["messages"][0]["content"])
            assert ch is not None and ch.labels == ["A", "B", "C", "D"] and len(set(ch.texts)) == 4
            assert ch.texts[ch.labels.index(r["answer"])] == r["value"]
    assert make_task(name, 100, 40, 100, seed=0) == task  # deterministic


def test_arithmetic_answers_are_right() -> None:
    for r in make_task("arith", 100, 0, 0, seed=1)["train"]:
        a, op, b = re.match(r"What is (\d+) (.) (\d+)\?", r["messages"][0]["content"]).groups()  # type: ignore[union-attr]
        want = {"+": int(a) + int(b), "-": int(a) - int(b), TIMES: int(a) * int(b)}[op]
        assert r["value"] == str(want)
