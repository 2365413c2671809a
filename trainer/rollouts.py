"""Sampled RL rollouts, kept for the user: one group of completions per optimizer step with their rewards.

Rewards alone do not show reward hacking (a grader fooled by a format, a process reward that likes long
answers); the completions that earned them do. ``rollouts.jsonl`` gets one line per kept completion and is
attached to the job as a second ``fine-tune-results`` file. A group (all completions of one prompt) is kept
rather than scattered samples because GRPO learns from the differences inside a group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.distributed import current

MAX_TEXT_CHARS = 8000
"""Longer prompts and completions are cut (the head, then a marker): the file stays small over long runs."""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + f" [... {len(text)} chars]"


def prompt_text(prompt: Any) -> str:
    """The last user turn of a chat prompt (the system prompt and few-shot examples repeat in every row)."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)


def group_samples(
    prompt: Any,
    completions: list[str],
    outcome: list[float],
    process: list[float] | None,
    rewards: list[float],
) -> list[dict[str, Any]]:
    """The lines for one group: the same prompt, each completion with its outcome, process and final reward."""
    question = _cut(prompt_text(prompt))
    return [
        {
            "prompt": question,
            "completion": _cut(text),
            "outcome_reward": outcome[i],
            "process_reward": process[i] if process is not None else None,
            "reward": rewards[i],
        }
        for i, text in enumerate(completions)
    ]


PREVIEW_CHARS = 600
"""Texts in a step's metrics event (the live view) are cut shorter than in the file: events are kept per step."""


def preview(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For the step's metrics event: the group's prompt and its highest- and lowest-rewarded completions."""
    if not samples:
        return None
    ranked = sorted(samples, key=lambda r: r["reward"], reverse=True)
    picks = ranked[:1] + ranked[-1:] if len(ranked) > 1 else ranked
    return {
        "prompt": samples[0]["prompt"][:PREVIEW_CHARS],
        "group_size": len(samples),
        "completions": [
            {
                "text": r["completion"][:PREVIEW_CHARS],
                "reward": r["reward"],
                "outcome_reward": r["outcome_reward"],
                "process_reward": r["process_reward"],
            }
            for r in picks
        ],
    }


def _step(line: str) -> int | None:
    """A line's step; None for a line torn by a killed worker (it is dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class RolloutLog:
    """Appends each step's samples to ``rollouts.jsonl``; a resumed run first drops the steps it will redo.

    Written by rank 0 only under a launch: it records the samples it is given (gather other ranks' first)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, step: int, stage: str, samples: list[dict[str, Any]]) -> None:
        if not samples or not current().is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for sample in samples:
                fh.write(json.dumps({"step": step, "stage": stage, **sample}, ensure_ascii=False) + "\n")

    def truncate(self, up_to_step: int) -> None:
        """Keep the lines of steps up to ``up_to_step`` (a resume redoes the later ones)."""
        if not self.path.exists() or not current().is_main:
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            if (step := _step(line)) is not None and step <= up_to_step
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        tmp.replace(self.path)

    def file(self) -> Path | None:
        return self.path if self.path.exists() and self.path.stat().st_size else None
