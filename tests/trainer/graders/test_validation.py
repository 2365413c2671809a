from __future__ import annotations

import copy
from typing import Any

import pytest

from trainer.graders import GraderValidationError, validate_grader

STRING_CHECK = {
    "type": "string_check",
    "name": "Example string check grader",
    "input": "{{sample.output_text}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}
# OpenAI's documented multi grader: a tool call's name and arguments, half a point each.
MULTI = {
    "type": "multi",
    "name": "tool call",
    "graders": {
        "name": {
            "name": "name",
            "type": "string_check",
            "input": "{{sample.output_tools[0].function.name}}",
            "reference": "{{item.name}}",
            "operation": "eq",
        },
        "arguments": {
            "name": "arguments",
            "type": "string_check",
            "input": "{{sample.output_tools[0].function.arguments}}",
            "reference": "{{item.arguments}}",
            "operation": "eq",
        },
    },
    "calculate_output": "0.5 * name + 0.5 * arguments",
}
SCORE_MODEL = {
    "type": "score_model",
    "name": "judge",
    "model": "gpt-4o-2024-08-06",
    "input": [
        {"role": "system", "content": "Score the answer from 0 to 1."},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "Reference: {{item.ref}}\n{{sample.output_text}}"}],
        },
    ],
    "sampling_params": {
        "temperature": 0,
        "seed": 1,
        "max_completions_tokens": 200,
        "reasoning_effort": "low",
    },
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    spec.update(changes)
    return spec


def bad(spec: Any) -> GraderValidationError:
    with pytest.raises(GraderValidationError) as err:
        validate_grader(spec)
    return err.value


def test_valid_graders_round_trip() -> None:
    for spec in (STRING_CHECK, MULTI, SCORE_MODEL):
        out = validate_grader(spec)
        assert validate_grader(out) == out  # normalization is idempotent
    assert validate_grader(STRING_CHECK) == STRING_CHECK


def test_input_is_not_mutated() -> None:
    spec = with_(STRING_CHECK, operation="neq")
    validate_grader(spec)
    assert spec["operation"] == "neq"


def test_neq_is_normalized_to_ne() -> None:
    assert validate_grader(with_(STRING_CHECK, operation="neq"))["operation"] == "ne"


def test_defaults_filled_in() -> None:
    spec = validate_grader({k: v for k, v in SCORE_MODEL.items() if k != "name"})
    assert spec["name"] == "score_model"
    assert spec["range"] == [0.0, 1.0]
    mc = validate_grader({"type": "multiple_choice", "name": "mc"})
    assert mc["input"] == "{{ sample.output_text }}" and mc["reference"] == "{{ item.answer }}"
    assert mc["labels"][:4] == ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ([1, 2], "grader"),
        ({"type": "nope"}, "grader.type"),
        (with_(STRING_CHECK, operation="contains"), "grader.operation"),
        ({k: v for k, v in STRING_CHECK.items() if k != "reference"}, "grader.reference"),
        (with_(STRING_CHECK, input=3), "grader.input"),
        (with_(STRING_CHECK, input="{{ user.name }}"), "grader.input"),
        (with_(STRING_CHECK, reference="{{ sample.text }}"), "grader.reference"),
        (with_(STRING_CHECK, extra_field=1), "grader.extra_field"),
        (with_(STRING_CHECK, name=""), "grader.name"),
        (
            {"type": "text_similarity", "input": "a", "reference": "b", "evaluation_metric": "rouge_9"},
            "grader.evaluation_metric",
        ),
        (
            {
                "type": "text_similarity",
                "input": "a",
                "reference": "b",
                "evaluation_metric": "bleu",
                "pass_threshold": "x",
            },
            "grader.pass_threshold",
        ),
        (with_(SCORE_MODEL, range=[1, 0]), "grader.range"),
        (with_(SCORE_MODEL, range=[0]), "grader.range"),
        (with_(SCORE_MODEL, input=[]), "grader.input"),
        (with_(SCORE_MODEL, input=[{"role": "robot", "content": "x"}]), "grader.input[0].role"),
        (
            with_(SCORE_MODEL, input=[{"role": "user", "content": [{"type": "video"}]}]),
            "grader.input[0].content[0].type",
        ),
        (with_(SCORE_MODEL, sampling_params={"temperature": "hot"}), "grader.sampling_params.temperature"),
        (with_(SCORE_MODEL, sampling_params={"top_k": 3}), "grader.sampling_params.top_k"),
        (
            with_(SCORE_MODEL, sampling_params={"max_completions_tokens": 0}),
            "grader.sampling_params.max_completions_tokens",
        ),
        (
            {
                "type": "label_model",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "labels": ["a", "b"],
                "passing_labels": ["c"],
            },
            "grader.passing_labels",
        ),
        (
            {
                "type": "label_model",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "labels": [],
                "passing_labels": [],
            },
            "grader.labels",
        ),
        ({"type": "python", "source": "def grade(sample, item) return 1"}, "grader.source"),
        ({"type": "python", "source": "def score(sample, item):\n    return 1\n"}, "grader.source"),
        (
            {"type": "python", "source": "# big\n" + "x = 1\n" * 50_000 + "def grade(s, i):\n    return 1\n"},
            "grader.source",
        ),
        ({"type": "endpoint", "url": "ftp://example.com/grade"}, "grader.url"),
        ({"type": "endpoint", "url": "https://example.com", "headers": {"x": 1}}, "grader.headers"),
        ({"type": "multiple_choice", "labels": ["AB"]}, "grader.labels"),
        (with_(MULTI, calculate_output="0.5 * name + 0.5 * args"), "grader.calculate_output"),
        (with_(MULTI, calculate_output="0.5 * name +"), "grader.calculate_output"),
        (with_(MULTI, graders={}), "grader.graders"),
        (with_(MULTI, graders="name"), "grader.graders"),
        (with_(MULTI, graders={"bad key": STRING_CHECK}), "grader.graders.bad key"),
        (with_(MULTI, graders={"max": STRING_CHECK}), "grader.graders.max"),
        (with_(MULTI, graders={"inner": MULTI}), "grader.graders.inner.type"),
        (with_(MULTI, graders={"b": with_(STRING_CHECK, operation="xx")}), "grader.graders.b.operation"),
        (with_(MULTI, graders=[STRING_CHECK]), "grader.graders[0]"),  # list names must be identifiers
    ],
)
def test_errors_name_the_field(spec: Any, param: str) -> None:
    err = bad(spec)
    assert err.param == param, err.message
    assert err.message


def test_python_source_limit_is_256_kb() -> None:
    body = "def grade(sample, item):\n    return 1.0\n"
    ok = body + "#" * (256 * 1024 - len(body) - 1) + "\n"
    assert len(ok.encode()) == 256 * 1024
    validate_grader({"type": "python", "source": ok})
    assert bad({"type": "python", "source": ok + "#"}).param == "grader.source"


def test_python_grade_may_come_from_an_import_or_assignment() -> None:
    validate_grader({"type": "python", "source": "from math import floor as grade\n"})
    validate_grader({"type": "python", "source": "def _g(s, i):\n    return 1\ngrade = _g\n"})


def test_multi_accepts_list_and_single_grader() -> None:
    listed = with_(MULTI, graders=list(MULTI["graders"].values()))
    assert validate_grader(listed)["graders"].keys() == {"name", "arguments"}
    single = with_(MULTI, graders=MULTI["graders"]["name"], calculate_output="name")
    assert list(validate_grader(single)["graders"]) == ["name"]
    dup = with_(MULTI, graders=[MULTI["graders"]["name"], MULTI["graders"]["name"]])
    assert "duplicate" in bad(dup).message


def test_multi_sub_graders_get_their_key_as_default_name_and_are_normalized() -> None:
    spec = with_(
        MULTI, graders={"x": {k: v for k, v in STRING_CHECK.items() if k != "name"} | {"operation": "neq"}}
    )
    spec["calculate_output"] = "1 - x"
    out = validate_grader(spec)
    assert out["graders"]["x"]["name"] == "x" and out["graders"]["x"]["operation"] == "ne"


def test_every_openai_metric_is_accepted() -> None:
    for metric in [
        "cosine",
        "fuzzy_match",
        "bleu",
        "gleu",
        "meteor",
        "rouge_1",
        "rouge_2",
        "rouge_3",
        "rouge_4",
        "rouge_5",
        "rouge_l",
    ]:
        validate_grader(
            {
                "type": "text_similarity",
                "input": "a",
                "reference": "b",
                "evaluation_metric": metric,
                "pass_threshold": 0.8,
            }
        )
