"""The batch engine's API: calling conventions, multi graders, aggregation, graders/run shape, passes()."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from trainer.graders import (
    ERROR_KEYS,
    GraderEngine,
    GraderSettings,
    Sample,
    pass_threshold,
    passes,
    run_grader,
)

EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "eq",
}
TOOL_MULTI = {
    "type": "multi",
    "name": "tool call",
    "graders": {
        "name": {
            "type": "string_check",
            "input": "{{sample.output_tools[0].function.name}}",
            "reference": "{{item.name}}",
            "operation": "eq",
        },
        "arguments": {
            "type": "string_check",
            "input": "{{sample.output_tools[0].function.arguments}}",
            "reference": "{{item.arguments}}",
            "operation": "eq",
        },
    },
    "calculate_output": "0.5 * name + 0.5 * arguments",
}


def tool_sample(name: str, arguments: str) -> Sample:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return Sample.from_text("", tool_calls=[call])


def test_grade_batch_from_a_plain_thread_and_inputs_of_every_kind() -> None:
    with GraderEngine(EXACT) as engine:
        result = engine.grade_batch(
            ["B", Sample(output_text="B"), {"output_text": "C"}],
            [{"answer": "B"}, {"answer": "B"}, {"answer": "B"}],
        )
        assert result.scores == [1.0, 1.0, 0.0]
        assert result.mean == pytest.approx(2 / 3)
        assert set(result.errors) == set(ERROR_KEYS) and not any(result.errors.values())
        assert result.timing.keys() == {"exact"}
        assert engine.grade_batch([], []).scores == []
        with pytest.raises(ValueError, match="2 samples but 1 items"):
            engine.grade_batch(["a", "b"], [{}])


def test_grade_batch_inside_a_running_loops_worker_thread_and_async() -> None:
    async def main(engine: GraderEngine) -> tuple[list[float], list[float], list[float]]:
        in_thread = await asyncio.to_thread(engine.grade_batch, ["B"], [{"answer": "B"}])
        awaited = await engine.agrade_batch(["A", "B"], [{"answer": "B"}] * 2)
        # A blocking call straight from a coroutine works too (it only stalls that loop).
        blocking = engine.grade_batch(["B"], [{"answer": "B"}])
        return in_thread.scores, awaited.scores, blocking.scores

    with GraderEngine(EXACT) as engine:
        assert asyncio.run(main(engine)) == ([1.0], [0.0, 1.0], [1.0])
        # Two loops in two threads, one engine.
        results: list[list[float]] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    asyncio.run(engine.agrade_batch(["B"], [{"answer": "B"}])).scores
                )
            )
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [[1.0]] * 4


def test_grade_batch_on_the_engines_own_loop_is_refused() -> None:
    with GraderEngine(EXACT) as engine:
        engine.grade_batch(["B"], [{"answer": "B"}])
        assert engine._loop is not None

        async def inside() -> None:
            engine.grade_batch(["B"], [{"answer": "B"}])

        with pytest.raises(RuntimeError, match="own loop"):
            asyncio.run_coroutine_threadsafe(inside(), engine._loop).result(timeout=10)


def test_closed_engine_refuses_work() -> None:
    engine = GraderEngine(EXACT)
    engine.grade_batch(["B"], [{"answer": "B"}])
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        engine.grade_batch(["B"], [{"answer": "B"}])


def test_multi_openai_tool_call_example() -> None:
    item = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    samples = [
        tool_sample("get_weather", '{"city": "Paris"}'),
        tool_sample("get_weather", '{"city": "Lyon"}'),
        tool_sample("get_time", '{"city": "Lyon"}'),
        Sample.from_text("no tool call"),
    ]
    with GraderEngine(TOOL_MULTI) as engine:
        result = engine.grade_batch(samples, [item] * 4)
    assert result.scores == [1.0, 0.5, 0.0, 0.0]
    assert result.sub_scores == {"name": [1.0, 1.0, 0.0, 0.0], "arguments": [1.0, 0.0, 0.0, 0.0]}
    # The sample without tool calls has no output_tools[0]: both sub-graders report the missing variable.
    assert result.errors["invalid_variable_error"] == 2
    assert result.sample_errors == [[], [], [], ["invalid_variable_error"]]
    assert result.timing.keys() == {"tool call", "name", "arguments"}
    assert result.error_rate == 0.25


def test_multi_formula_errors_score_zero() -> None:
    spec = {**TOOL_MULTI, "calculate_output": "name / arguments"}
    with GraderEngine(spec) as engine:
        result = engine.grade_batch(
            [tool_sample("get_weather", "{}")], [{"name": "get_weather", "arguments": "x"}]
        )
    assert result.scores == [0.0] and result.sample_errors == [["formula_parse_error"]]
    assert "division by zero" in result.error_details[0]


def test_multi_with_python_and_similarity_subgraders(settings: GraderSettings) -> None:
    spec = {
        "type": "multi",
        "graders": {
            "length": {
                "type": "python",
                "source": "def grade(sample, item):\n    return min(1.0, len(sample['output_text']) / 10)\n",
            },
            "sim": {
                "type": "text_similarity",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.answer }}",
                "evaluation_metric": "rouge_1",
            },
        },
        "calculate_output": "max(length, sim) - min(length, sim) ^ 2",
    }
    with GraderEngine(spec, settings) as engine:
        result = engine.grade_batch(["hello", "hello world, friend"], [{"answer": "hello"}] * 2)
    length, sim = result.sub_scores["length"], result.sub_scores["sim"]
    assert length == [0.5, 1.0] and sim[0] == 1.0
    assert result.scores == pytest.approx(
        [max(a, b) - min(a, b) ** 2 for a, b in zip(length, sim, strict=True)]
    )


def test_error_details_are_capped() -> None:
    settings = GraderSettings(max_error_details=2, max_error_detail_chars=100)
    with GraderEngine(EXACT, settings) as engine:
        result = engine.grade_batch(["x"] * 5, [{}] * 5)
    assert result.errors["invalid_variable_error"] == 5
    assert len(result.error_details) == 2 and all(len(d) <= 100 for d in result.error_details)


def test_run_response_matches_the_openai_sdk_types() -> None:
    from openai.types.fine_tuning.alpha import GraderRunResponse

    out = run_grader(TOOL_MULTI, '{"not": "a tool call"}', {"name": "n", "arguments": "a"}, GraderSettings())
    parsed = GraderRunResponse.model_validate(out)
    assert parsed.reward == 0.0
    assert parsed.metadata.name == "tool call" and parsed.metadata.type == "multi"
    assert parsed.metadata.errors.invalid_variable_error is True
    assert parsed.metadata.errors.formula_parse_error is False
    assert parsed.sub_rewards == {"name": 0.0, "arguments": 0.0}
    assert parsed.metadata.execution_time > 0
    assert set(out["metadata"]["errors"]) == {
        *ERROR_KEYS,
        "python_grader_runtime_error_details",
        "python_grader_server_error_type",
        "model_grader_server_error_details",
    }


def test_run_fills_output_json_from_the_sample() -> None:
    spec = {**EXACT, "input": "{{ sample.output_json.answer }}"}
    assert run_grader(spec, '{"answer": "B"}', {"answer": "B"}, GraderSettings())["reward"] == 1.0
    out = run_grader(spec, "B", {"answer": "B"}, GraderSettings())
    assert out["reward"] == 0.0 and out["metadata"]["errors"]["invalid_variable_error"] is True


@pytest.mark.parametrize(
    ("spec", "score", "expected"),
    [
        (EXACT, 1.0, True),
        (EXACT, 0.0, False),
        ({"type": "score_model", "range": [0, 10]}, 9.9, False),
        ({"type": "score_model", "range": [0, 10]}, 10.0, True),
        ({"type": "text_similarity", "pass_threshold": 0.8}, 0.8, True),
        ({"type": "text_similarity", "pass_threshold": 0.8}, 0.79, False),
        (TOOL_MULTI, 0.5, False),
        ({**TOOL_MULTI, "pass_threshold": 0.5}, 0.5, True),
        ({"type": "python"}, 1.0 - 1e-12, True),  # float noise
    ],
)
def test_passes(spec: dict[str, Any], score: float, expected: bool) -> None:
    assert passes(spec, score) is expected


def test_pass_threshold_defaults() -> None:
    assert pass_threshold({"type": "label_model"}) == 1.0
    assert pass_threshold({"type": "score_model", "range": [-1, 3]}) == 3.0
