"""Combining shard evaluations (one per rank) gives what one process evaluating every row reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer.evaluation import EvalResult, combine


def _result(scores: list[float], samples: int, *, errors: dict[str, int] | None = None) -> EvalResult:
    n = len(scores)
    per_q = [sum(scores[i : i + samples]) / samples for i in range(0, n, samples)]
    return EvalResult(
        mean_reward=sum(scores) / n,
        accuracy=sum(s >= 1.0 for s in scores) / n,
        n_questions=n // samples,
        n_samples=n,
        seconds=1.0,
        completion_tokens_mean=10.0 * (1 + scores[0]),
        grader_errors=errors or {},
        per_question=per_q,
        scores=scores,
    )


def test_combined_shards_equal_the_whole() -> None:
    a = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0]
    b = [0.0, 0.0, 1.0, 0.0]
    whole = _result(a + b, 2)
    got = combine(
        [
            _result(a, 2, errors={"python_grader_runtime_error": 1}),
            _result(b, 2, errors={"python_grader_runtime_error": 2, "x": 1}),
        ]
    )
    assert got.mean_reward == pytest.approx(whole.mean_reward)
    assert got.accuracy == pytest.approx(whole.accuracy)
    assert (got.n_questions, got.n_samples) == (5, 10)
    assert got.per_question == whole.per_question and got.scores == whole.scores
    assert got.grader_errors == {"python_grader_runtime_error": 3, "x": 1}
    assert got.completion_tokens_mean == pytest.approx((6 * 20.0 + 4 * 10.0) / 10)


def test_an_empty_shard_changes_nothing() -> None:
    one = _result([1.0, 0.0], 1)
    empty = EvalResult(0.0, 0.0, 0, 0, 0.0, 0.0)
    got = combine([one, empty])
    assert (got.mean_reward, got.accuracy, got.n_questions) == (0.5, 0.5, 2)


def test_padding_is_generated_but_neither_graded_nor_counted(tiny_model: Path) -> None:
    """A rank's padding (sharded weights: every rank generates as often) leaves its result as without it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.evaluation import evaluate
    from trainer.grading import Grader

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    prompts = [[{"role": "user", "content": f"What is {i} + 3?"}] for i in range(2)]
    items = [{"answer": str(i + 3)} for i in range(2)]
    grader_spec = {
        "type": "string_check",
        "name": "g",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": "like",
    }
    kw: dict[str, Any] = {"samples": 1, "temperature": 0.0, "max_new_tokens": 6}
    with Grader(grader_spec) as grader:
        plain = evaluate(model, tok, prompts, items, grader, **kw)
        padded = evaluate(model, tok, prompts, items, grader, padding=[prompts[0]] * 3, batch_size=2, **kw)
        only_padding = evaluate(model, tok, [], [], grader, padding=prompts, **kw)
    assert padded.n_samples == plain.n_samples == 2 and padded.scores == plain.scores
    assert padded.completion_tokens_mean == plain.completion_tokens_mean > 0
    assert only_padding.n_samples == 0 and only_padding.scores == []
