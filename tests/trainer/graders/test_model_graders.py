"""score_model and label_model against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.trainer.graders.servers import Recorder
from trainer.graders import GraderEngine, GraderSettings, run_grader


def score_model(**changes: Any) -> dict[str, Any]:
    spec = {
        "type": "score_model",
        "name": "judge",
        "model": "judge-1",
        "input": [
            {"role": "developer", "content": "Grade the answer against {{ item.reference }}."},
            {"role": "user", "content": [{"type": "input_text", "text": "{{ sample.output_text }}"}]},
        ],
    }
    spec.update(changes)
    return spec


def label_model() -> dict[str, Any]:
    return {
        "type": "label_model",
        "name": "labeler",
        "model": "judge-1",
        "input": [{"role": "user", "content": "Classify: {{ sample.output_text }}"}],
        "labels": ["good", "ok", "bad"],
        "passing_labels": ["good", "ok"],
    }


@pytest.fixture
def judge_settings(judge: tuple[str, Recorder], settings: GraderSettings) -> GraderSettings:
    url, rec = judge
    rec.requests.clear()
    return settings.model_copy(update={"base_url": url, "api_key": "sk-judge"})


def grade(
    spec: dict[str, Any], texts: list[str], settings: GraderSettings, item: dict[str, Any] | None = None
) -> Any:
    with GraderEngine(spec, settings) as engine:
        return engine.grade_batch(texts, [item or {"reference": "42"}] * len(texts))


def test_score_model_request_and_result(judge: tuple[str, Recorder], judge_settings: GraderSettings) -> None:
    spec = score_model(
        sampling_params={
            "temperature": 0.2,
            "seed": 7,
            "max_completions_tokens": 64,
            "reasoning_effort": "low",
        }
    )
    result = grade(spec, ["DO:score=0.75"], judge_settings)
    assert result.scores == [0.75] and not result.sample_errors[0]
    body, headers = judge[1].requests[0]["body"], judge[1].requests[0]["headers"]
    assert headers["authorization"] == "Bearer sk-judge"
    assert body["model"] == "judge-1"
    assert body["temperature"] == 0.2 and body["seed"] == 7 and body["reasoning_effort"] == "low"
    assert body["max_completion_tokens"] == 64
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["result"] == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert schema["properties"]["steps"]["maxItems"] == 3  # a small judge under constraint still ends
    # developer -> system, the answer-format instruction appended to it, templates rendered
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"].startswith("Grade the answer against 42.")
    assert '"result"' in body["messages"][0]["content"]
    assert body["messages"][1]["content"] == "DO:score=0.75"
    assert result.token_usage == {
        "judge-1": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cached_tokens": 2}
    }


@pytest.mark.parametrize(
    ("text", "rng", "expected"),
    [
        ("DO:score=5", [0, 1], 1.0),  # clamped to the range
        ("DO:score=-3", [0, 1], 0.0),
        ("DO:score=7", [0, 10], 7.0),
        ('DO:score="0.4"', [0, 1], 0.4),  # numeric strings are numbers
        ("DO:prose=0.6", [0, 1], 0.6),  # JSON inside prose and a code fence
    ],
)
def test_score_model_clamps_and_parses(
    text: str, rng: list[float], expected: float, judge_settings: GraderSettings
) -> None:
    result = grade(score_model(range=rng), [text], judge_settings)
    assert result.scores == [pytest.approx(expected)]
    assert not result.sample_errors[0]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('DO:score="great"', "model_grader_parse_error"),  # non-numeric -> 0
        ("DO:score=null", "model_grader_parse_error"),
        ("DO:garbage", "model_grader_parse_error"),
        ("DO:refuse", "model_grader_refusal_error"),
        ("DO:down", "model_grader_server_error"),
    ],
)
def test_score_model_failures_score_zero(text: str, error: str, judge_settings: GraderSettings) -> None:
    result = grade(score_model(), [text], judge_settings.model_copy(update={"model_retries": 1}))
    assert result.scores == [0.0]
    assert result.errors[error] == 1 and result.sample_errors == [[error]]


def test_retries_transient_errors(judge: tuple[str, Recorder], judge_settings: GraderSettings) -> None:
    result = grade(score_model(), ["DO:flaky a", "DO:flaky b"], judge_settings)
    assert result.scores == [1.0, 1.0] and not any(result.sample_errors)
    assert len(judge[1].requests) == 4


def test_falls_back_when_structured_output_is_unsupported(
    judge: tuple[str, Recorder], judge_settings: GraderSettings
) -> None:
    result = grade(score_model(), ["DO:noformat"], judge_settings)
    assert result.scores == [0.25]
    assert ["response_format" in r["body"] for r in judge[1].requests] == [True, False]


def test_per_model_endpoint_override(judge: tuple[str, Recorder], settings: GraderSettings) -> None:
    url, rec = judge
    rec.requests.clear()
    routed = GraderSettings.model_validate(
        settings.model_dump()
        | {
            "base_url": "http://127.0.0.1:9/v1",  # the default would fail: the override must be used
            "models": {"gpt-4o": {"base_url": url, "api_key": "sk-override", "model": "judge-1"}},
        }
    )
    result = grade(score_model(model="gpt-4o"), ["DO:score=0.5"], routed)
    assert result.scores == [0.5]
    assert rec.requests[0]["headers"]["authorization"] == "Bearer sk-override"
    assert rec.requests[0]["body"]["model"] == "judge-1"


def test_no_endpoint_configured(settings: GraderSettings) -> None:
    result = grade(score_model(), ["x"], settings)
    assert result.scores == [0.0] and result.errors["model_grader_server_error"] == 1
    assert "no endpoint" in result.error_details[0]


def test_label_model(judge_settings: GraderSettings, judge: tuple[str, Recorder]) -> None:
    result = grade(
        label_model(), ["DO:label=good", "DO:label=ok", "DO:label=bad", "DO:label=meh"], judge_settings
    )
    assert result.scores == [1.0, 1.0, 0.0, 0.0]
    assert result.sample_errors == [[], [], [], ["model_grader_parse_error"]]
    schema = judge[1].requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["result"]["enum"] == ["good", "ok", "bad"]


def test_requests_run_concurrently_but_bounded(
    judge: tuple[str, Recorder], judge_settings: GraderSettings
) -> None:
    bounded = judge_settings.model_copy(update={"model_concurrency": 4})
    start = time.perf_counter()
    result = grade(score_model(), [f"DO:slow=0.3 #{i}" for i in range(12)], bounded)
    elapsed = time.perf_counter() - start
    assert result.scores == [1.0] * 12
    assert judge[1].max_active == 4
    assert elapsed < 12 * 0.3 / 2  # ~3 rounds of 0.3 s, far below the 3.6 s of serial requests


def test_multi_with_model_and_string_graders_via_run(judge_settings: GraderSettings) -> None:
    spec = {
        "type": "multi",
        "name": "combined",
        "graders": {
            "judge": score_model(),
            "exact": {
                "type": "string_check",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.reference }}",
                "operation": "like",
            },
        },
        "calculate_output": "0.7 * judge + 0.3 * exact",
    }
    out = run_grader(spec, "DO:score=0.5 42", {"reference": "42"}, judge_settings)
    assert out["reward"] == pytest.approx(0.65)
    assert out["sub_rewards"] == {"judge": 0.5, "exact": 1.0}
    assert out["metadata"]["sampled_model_name"] == "judge-1"
    assert out["metadata"]["token_usage"] == 15  # an int, as the SDK types it
    assert out["model_grader_token_usage_per_model"]["judge-1"]["prompt_tokens"] == 10


def test_run_reports_server_error_details(judge_settings: GraderSettings) -> None:
    out = run_grader(
        score_model(), "DO:down", {"reference": "x"}, judge_settings.model_copy(update={"model_retries": 0})
    )
    errors = out["metadata"]["errors"]
    assert out["reward"] == 0.0
    assert errors["model_grader_server_error"] is True
    assert "503" in errors["model_grader_server_error_details"]
