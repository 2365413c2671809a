"""Fixtures for the trainer tests: a tiny local model, small JSONL files, a recording sink, scripted control."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see trainer.run_job: the CPU is shared


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> Path:
    return tiny_model_dir  # tests/conftest.py's: one build per run


ARITH = [(i, j) for i in range(2, 8) for j in range(3, 5)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


ARITH_ROWS = [
    {"messages": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)} for a, b in ARITH
]


@pytest.fixture
def rft_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "train.jsonl", ARITH_ROWS), write_jsonl(
        tmp_path / "valid.jsonl", ARITH_ROWS[:3]
    )


@pytest.fixture
def sft_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": f"The answer is {a + b}."},
            ]
        }
        for a, b in ARITH
    ]
    return write_jsonl(tmp_path / "strain.jsonl", rows), write_jsonl(tmp_path / "svalid.jsonl", rows[:3])


LIKE_GRADER = {
    "type": "string_check",
    "name": "contains answer",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "like",
}


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.on_metrics: Any = None

    def message(self, text: str, *, level: str = "info") -> None:
        self.events.append(("message", (level, text)))

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self.events.append(("metrics", data))
        if self.on_metrics:
            self.on_metrics(data)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        self.events.append(("checkpoint_saved", (step, Path(path), metrics)))

    def checkpoint_removed(self, step: int) -> None:
        self.events.append(("checkpoint_removed", step))

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        self.events.append(("estimate", (finish_at, step, total_steps)))

    def of(self, kind: str) -> list[Any]:
        return [p for k, p in self.events if k == kind]

    def steps(self, stage: str | None = None) -> list[dict[str, Any]]:
        return [
            d for d in self.of("metrics") if "total_steps" in d and (stage is None or d.get("stage") == stage)
        ]

    def messages(self) -> list[str]:
        return [t for _, t in self.of("message")]


class ScriptedControl:
    """Returns ``request`` once armed; tests arm it from a sink callback at a chosen step."""

    def __init__(self) -> None:
        self.request: Literal["cancel", "pause"] | None = None
        self.polls = 0

    def poll(self) -> Literal["cancel", "pause"] | None:
        self.polls += 1
        return self.request


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def control() -> ScriptedControl:
    return ScriptedControl()
