"""The rollouts log: what one group looks like, long texts cut, a resumed run's later steps dropped."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.rollouts import MAX_TEXT_CHARS, RolloutLog, group_samples, prompt_text


def test_a_group_keeps_the_question_and_each_completion_with_its_rewards() -> None:
    prompt = [
        {"role": "system", "content": "Answer with a letter."},
        {"role": "user", "content": "example question"},  # a few-shot example
        {"role": "assistant", "content": "example answer"},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    lines = group_samples(prompt, ["4", "5" * (MAX_TEXT_CHARS + 10)], [1.0, 0.0], [0.5, 0.25], [0.85, 0.075])
    assert [r["prompt"] for r in lines] == ["What is 2 + 2?"] * 2
    assert lines[0] == {
        "prompt": "What is 2 + 2?", "completion": "4", "outcome_reward": 1.0, "process_reward": 0.5, "reward": 0.85
    }  # fmt: skip
    assert lines[1]["completion"] == "5" * MAX_TEXT_CHARS + f" [... {MAX_TEXT_CHARS + 10} chars]"
    assert group_samples("plain prompt", ["a"], [1.0], None, [1.0])[0]["process_reward"] is None
    assert prompt_text([{"role": "system", "content": "only a system turn"}]) == ""


def test_truncate_keeps_earlier_steps_and_drops_a_torn_line(tmp_path: Path) -> None:
    log = RolloutLog(tmp_path / "rollouts.jsonl")
    assert log.file() is None
    for step in (1, 2, 3):
        log.record(step, "rl", [{"completion": f"c{step}"}])
    log.record(4, "rl", [])  # a step without samples writes nothing
    with log.path.open("a") as fh:
        fh.write('{"step": 3, "comp')  # a worker killed mid-write
    log.truncate(2)
    assert [json.loads(line) for line in log.path.read_text().splitlines()] == [
        {"step": 1, "stage": "rl", "completion": "c1"},
        {"step": 2, "stage": "rl", "completion": "c2"},
    ]
    log.record(3, "rl", [{"completion": "again"}])
    assert log.file() == log.path and log.path.read_text().count("\n") == 3
