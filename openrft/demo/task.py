"""The demo's domain task, shaped the way a user brings one to reinforcement fine-tuning: customer messages
to sort into four categories, the answer in each row's ``label`` field, and a ``python`` grader that reads it
(``openrft.demo.tasks.intent``). Nothing in the job tells the service where the answer is: it finds it.

Train, validation and held-out test rows never share a message; every category is equally frequent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrft.demo.tasks import INTENT_GRADER, INTENT_LABELS, make_splits, write_jsonl

LABELS = INTENT_LABELS
GRADER: dict[str, Any] = INTENT_GRADER
CHANCE = 1 / len(LABELS)
"""A uniform guess among the categories (the model must also reply with the bare category)."""


@dataclass(frozen=True)
class DemoTask:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]

    def write(self, directory: Path) -> dict[str, Path]:
        return {
            name: write_jsonl(directory / f"{name}.jsonl", rows)
            for name, rows in (("train", self.train), ("validation", self.validation), ("test", self.test))
        }


def make_task(n_train: int = 100, n_validation: int = 16, n_test: int = 40, *, seed: int = 0) -> DemoTask:
    """Disjoint splits; the same arguments always give the same files."""
    splits = make_splits("intent", n_train, n_validation, n_test, seed=seed)
    return DemoTask(train=splits["train"], validation=splits["valid"], test=splits["test"])
