"""The grader registry is the one place a type is known: a type registered from its own module (here
tests/trainer/graders/word_limit.py) validates, grades, nests in multi graders, answers graders/run and
sets its pass threshold without a change anywhere else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.trainer.graders.word_limit import WordLimit
from trainer.graders import (
    GRADER_TYPES,
    GraderEngine,
    GraderSettings,
    GraderValidationError,
    pass_threshold,
    passes,
    registry,
    run_grader,
    validate_grader,
)

LIMIT = {"type": "word_limit", "input": "{{ sample.output_text }}", "max_words": 2}


@pytest.fixture
def word_limit() -> Iterator[None]:
    registry.register(WordLimit())
    try:
        yield
    finally:
        registry.unregister("word_limit")


def test_every_builtin_type_is_registered_in_order() -> None:
    assert registry.names() == GRADER_TYPES
    assert GRADER_TYPES == (
        "string_check", "text_similarity", "score_model", "label_model", "python", "multi",
        "multiple_choice", "endpoint",
    )  # fmt: skip
    assert [t for t in GRADER_TYPES if not registry.get(t).nestable] == ["multi"]  # type: ignore[union-attr]


def test_a_registered_type_validates_with_its_own_fields(word_limit: None) -> None:
    assert validate_grader(LIMIT) == {**LIMIT, "name": "word_limit"}
    with pytest.raises(GraderValidationError) as exc:
        validate_grader({**LIMIT, "max_words": 0})
    assert (exc.value.param, exc.value.message) == ("grader.max_words", "must be a positive integer")
    with pytest.raises(GraderValidationError) as exc:
        validate_grader({**LIMIT, "operation": "eq"})
    assert (exc.value.param, exc.value.message) == (
        "grader.operation",
        "unknown field for a word_limit grader",
    )
    with pytest.raises(GraderValidationError) as exc:
        validate_grader({"type": "word_limit", "input": "x"})
    assert (exc.value.param, exc.value.message) == ("grader.max_words", "is required for a word_limit grader")
    with pytest.raises(GraderValidationError, match="word_limit; got 'nope'"):
        validate_grader({"type": "nope"})


def test_a_registered_type_grades_alone_and_inside_multi(word_limit: None, settings: GraderSettings) -> None:
    with GraderEngine(LIMIT, settings) as engine:
        assert engine.grade_batch(["one two", "one two three four"], [{}, {}]).scores == [1.0, 0.5]
    multi = {
        "type": "multi",
        "graders": {
            "short": LIMIT,
            "exact": {
                "type": "string_check",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.answer }}",
                "operation": "eq",
            },
        },
        "calculate_output": "short * exact",
    }
    with GraderEngine(multi, settings) as engine:
        result = engine.grade_batch(["a b", "a b c d"], [{"answer": "a b"}, {"answer": "a b c d"}])
    assert result.scores == [1.0, 0.5]
    assert result.sub_scores == {"short": [1.0, 0.5], "exact": [1.0, 1.0]}


def test_a_registered_type_answers_graders_run_and_sets_its_pass_threshold(
    word_limit: None, settings: GraderSettings
) -> None:
    body = run_grader(LIMIT, "a b c", None, settings)
    assert body["reward"] == pytest.approx(2 / 3)
    assert body["metadata"]["type"] == "word_limit" and not any(body["metadata"]["errors"].values())
    spec = validate_grader(LIMIT)
    assert pass_threshold(spec) == 0.5 and passes(spec, 2 / 3)
    assert pass_threshold({**spec, "pass_threshold": 0.9}) == 0.9
    missing = run_grader({**LIMIT, "input": "{{ item.text }}"}, "x", {}, settings)
    assert missing["reward"] == 0.0 and missing["metadata"]["errors"]["invalid_variable_error"]


def test_an_unregistered_type_is_unknown_again(settings: GraderSettings) -> None:
    registry.register(WordLimit())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(WordLimit())
    registry.unregister("word_limit")
    with pytest.raises(GraderValidationError) as exc:
        validate_grader(LIMIT)
    assert exc.value.message == f"must be one of {', '.join(GRADER_TYPES)}; got 'word_limit'"


def test_builtin_types_are_the_modules_that_define_one() -> None:
    """Adding a built-in type is adding its module: every module of trainer/graders/types with a GRADER_TYPE is
    registered, in the documented order (OpenAI's types, then OpenRFT's)."""
    import importlib
    import pkgutil

    import trainer.graders.types as types

    defined = {
        info.name
        for info in pkgutil.iter_modules(types.__path__)
        if hasattr(importlib.import_module(f"{types.__name__}.{info.name}"), "GRADER_TYPE")
    }
    assert defined == {t.name for t in types.BUILTIN}
    assert [t.name for t in types.BUILTIN] == [
        "string_check",
        "text_similarity",
        "score_model",
        "label_model",
        "python",
        "multi",
        "multiple_choice",
        "endpoint",
    ]
