from __future__ import annotations

import math

import pytest

from trainer.graders.errors import GradingError
from trainer.graders.expression import FormulaError, FormulaEvalError, evaluate, names_in, parse_formula
from trainer.graders.templates import Sample, Template, TemplateSyntaxError


def scope(text: str = "hello", item: dict | None = None, tools: list | None = None) -> dict:
    return {"sample": Sample.from_text(text, tool_calls=tools).as_dict(), "item": item}


# --- templates -------------------------------------------------------------------------------------


def test_nested_item_paths_and_spacing() -> None:
    item = {"gt": {"date": "2024-01-02", "tags": ["a", "b"]}, "answer": "B"}
    assert Template.parse("{{item.gt.date}}|{{ item.answer }}|{{  item.gt.tags[1] }}").render(
        scope(item=item)
    ) == ("2024-01-02|B|b")
    assert Template.parse('{{ item["gt"]["date"] }}').render(scope(item=item)) == "2024-01-02"


def test_tool_call_paths() -> None:
    tools = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    s = scope("", item={}, tools=tools)
    assert Template.parse("{{ sample.output_tools[0].function.name }}").render(s) == "get_weather"
    assert Template.parse("{{sample.output_tools[0].function.arguments}}").render(s) == '{"city": "Paris"}'
    assert Template.parse("{{ sample.choices[0].message.content }}").render(scope("hi", {})) == "hi"


def test_output_json_is_filled_only_for_json_text() -> None:
    assert Sample.from_text('{"answer": 42}').output_json == {"answer": 42}
    assert Sample.from_text(" [1, 2] ").output_json == [1, 2]
    assert Sample.from_text("42 apples").output_json is None
    assert Sample.from_text("{not json").output_json is None
    s = scope('{"answer": {"value": 42}}', {})
    assert Template.parse("{{ sample.output_json.answer.value }}").render(s) == "42"


def test_non_string_values_render_as_json() -> None:
    item = {"n": 3, "ok": True, "obj": {"a": [1, 2]}, "none": None}
    rendered = Template.parse("{{item.n}} {{item.ok}} {{item.obj}} {{item.none}}").render(scope(item=item))
    assert rendered == '3 true {"a": [1, 2]} null'
    assert Template.parse("{{ item.obj.a }}").resolve(scope(item=item)) == [1, 2]  # raw value when alone


@pytest.mark.parametrize(
    "template",
    [
        "{{ item.missing }}",
        "{{ item.gt.nope }}",
        "{{ item.list[5] }}",
        "{{ item.gt[0] }}",
        "{{ sample.output_json.x }}",
    ],
)
def test_missing_paths_are_invalid_variable_errors(template: str) -> None:
    with pytest.raises(GradingError) as err:
        Template.parse(template).render(scope("plain text", {"gt": {"a": 1}, "list": [1]}))
    assert err.value.key == "invalid_variable_error"


def test_missing_item_is_an_invalid_variable_error() -> None:
    with pytest.raises(GradingError) as err:
        Template.parse("{{ item.answer }}").render(scope(item=None))
    assert err.value.key == "invalid_variable_error"


@pytest.mark.parametrize(
    "template",
    [
        "{{ foo.bar }}",
        "{{ sample.nope }}",
        "{{ item.a[x] }}",
        "{{ }}",
        "{{ sample }}",
        "{{ sample.output_text ",
        "ok {{ item.a }} then {{ item.b",
    ],
)
def test_bad_template_syntax(template: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        Template.parse(template)


def test_text_without_variables_is_literal() -> None:
    assert Template.parse("no vars { here }").render(scope()) == "no vars { here }"


# --- calculate_output formulas ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),  # left-associative
        ("8 / 4 / 2", 1.0),
        ("2 ^ 3 ^ 2", 512.0),  # right-associative: 2^(3^2)
        ("-2 ^ 2", -4.0),  # ^ binds tighter than unary minus
        ("2 ^ -1", 0.5),
        ("--1", 1.0),
        ("0.5 * name + 0.5 * arguments", 0.75),
        ("min(a, b)", 0.5),
        ("max(a, b, 2)", 2.0),
        ("min(a)", 1.0),
        ("abs(-3) + floor(2.7) + ceil(2.1)", 8.0),
        ("exp(0) + sqrt(16) + log(1)", 5.0),
        ("1e-3 * 1000 + .5", 1.5),
        ("a*b^2", 0.25),
    ],
)
def test_formula_values(formula: str, expected: float) -> None:
    values = {"a": 1.0, "b": 0.5, "name": 1.0, "arguments": 0.5}
    assert evaluate(parse_formula(formula), values) == pytest.approx(expected)


def test_formula_names() -> None:
    assert names_in(parse_formula("0.5*x + max(y, 1) - abs(z)")) == {"x", "y", "z"}


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("", "empty"),
        ("1 +", "end of formula"),
        ("1 2", "operator"),
        ("(1 + 2", "end of formula"),
        ("1 + 2)", "unexpected '\\)'"),
        ("foo(1)", "unknown function 'foo'"),
        ("min()", "one or more"),
        ("sqrt(1, 2)", "takes 1 argument"),
        ("a ** 2", "unexpected '*'"),
        ("__import__('os')", "unexpected character"),
        ("a; b", "unexpected character ';'"),
        ("(" * 2000 + "1" + ")" * 2000, "nested too deeply"),
    ],
)
def test_formula_parse_errors(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula)


@pytest.mark.parametrize("formula", ["1 / 0", "log(0)", "sqrt(-1)", "exp(1000)", "(-8) ^ 0.5", "a / b"])
def test_formula_evaluation_errors(formula: str) -> None:
    with pytest.raises(FormulaEvalError):
        evaluate(parse_formula(formula), {"a": 1.0, "b": 0.0})


def test_formula_results_are_finite_floats() -> None:
    value = evaluate(parse_formula("floor(a)"), {"a": 2.5})
    assert isinstance(value, float) and math.isfinite(value)
