"""Reference responses: a row's reference answer written as a response the grader accepts.

Used where the paper falls back to the reference answer (no sampled trace was correct) and as the answers of
the few-shot ICL examples. Each response is checked with the job's grader, so only graded-correct text is ever
trained on or shown as an example. Where the task allows, the response carries a short worked reasoning: the
row's own explanation field, the arithmetic in the question worked out, or the matching option spelled out.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import TYPE_CHECKING, Any

from trainer.data import Row, parse_choices, question, reference_template, render

if TYPE_CHECKING:
    from trainer.grading import Grader

# Tried in order when response_template is "auto": the paper's format, a common "Answer:" line, bare answer.
AUTO_TEMPLATES = [
    "{reasoning}\n\nThe correct answer is: \\boxed{{answer}}",
    "{reasoning}\n\nAnswer: {answer}",
    "{reasoning}\n\n{answer}",
    "{answer}",
]
REASONING_FIELDS = ("explanation", "rationale", "reasoning", "solution", "justification")

_OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
}
_TIMES, _DIVIDE = "\u00d7", "\u00f7"
_EXPR = re.compile(rf"\d+(?:\.\d+)?(?:\s*[-+*/x{_TIMES}{_DIVIDE}]\s*\(?\s*\d+(?:\.\d+)?\s*\)?)+")


def _safe_eval(expr: str) -> float | None:
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.operand)))
        raise ValueError("unsupported")

    try:
        return ev(ast.parse(expr, mode="eval"))
    except (ValueError, SyntaxError, ZeroDivisionError, RecursionError):
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


def arithmetic_steps(text: str) -> str | None:
    """Work out the arithmetic expressions in a question ("What is 12 + 7 * 3?" -> "12 + 7 * 3 = 33.")."""
    steps = []
    for m in _EXPR.finditer(text):
        raw = m.group(0)
        value = _safe_eval(raw.replace(_TIMES, "*").replace(_DIVIDE, "/").replace("x", "*"))
        if value is not None:
            steps.append(f"{raw.strip()} = {_num(value)}.")
    return " ".join(steps) if steps else None


def worked_reasoning(row: Row, answer: str) -> str:
    """A short reasoning that leads to ``answer`` for ``row``, from what the row itself offers: its own
    explanation field or the arithmetic in the question, then (multiple choice) each option checked."""
    q = question(row)
    choices = parse_choices(q)
    own = next((str(row.item[k]).strip() for k in REASONING_FIELDS if _text(row.item.get(k))), None)
    math = arithmetic_steps(choices.stem if choices else q)
    parts = []
    if own:
        parts.append(own)
    elif math:
        parts.append(f"Let me compute step by step: {math}")
    if choices and answer.strip() in choices.labels:
        # One line per option that puts the option next to the result before the verdict: a comparison of two
        # adjacent values is within a small model's reach, recalling which letter holds the value it computed
        # is not (SmolLM2 otherwise settles on one letter, or marks a position rather than a value).
        target = choices.texts[choices.labels.index(answer.strip())]
        lines = [
            f"{lab}. {text} vs {target}: {'yes' if lab == answer.strip() else 'no'}"
            for lab, text in zip(choices.labels, choices.texts, strict=True)
        ]
        parts.append(f"Checking each option against {target}:\n" + "\n".join(lines))
    elif not parts:
        parts.append("Let me reason about the question step by step and check the answer against it.")
    return "\n\n".join(parts)


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def fill(template: str, *, reasoning: str, answer: str) -> str:
    # str.replace, not str.format: templates contain literal braces (\boxed{...}).
    return template.replace("{reasoning}", reasoning).replace("{answer}", answer).strip()


def reference_answers(
    rows: list[Row], grader_spec: dict[str, Any] | None, override: str | None
) -> list[str | None]:
    tpl = reference_template(grader_spec, override)
    if tpl is None:
        return [None] * len(rows)
    return [render(tpl, item=r.item) for r in rows]


def preferred_templates(instruction: str) -> list[str]:
    """The auto templates, the one the task's instruction asks for first (a trace should follow the prompt)."""
    order = list(AUTO_TEMPLATES)
    if "answer:" in instruction.lower() and "\\boxed" not in instruction:
        order.insert(0, order.pop(1))
    return order


def reference_responses(
    rows: list[Row],
    grader: Grader,
    *,
    grader_spec: dict[str, Any] | None,
    reference: str | None,
    template: str = "auto",
    instruction: str = "",
) -> tuple[list[str | None], dict[str, int]]:
    """A graded-correct response per row built from its reference answer (None where none passes).

    ``instruction`` (the system prompt) decides which auto template is tried first.
    """
    answers = reference_answers(rows, grader_spec, reference)
    templates = preferred_templates(instruction) if template == "auto" else [template]
    out: list[str | None] = [None] * len(rows)
    used: dict[str, int] = {}
    pending = [i for i, a in enumerate(answers) if a]
    for tpl in templates:
        if not pending:
            break
        texts = [
            fill(tpl, reasoning=worked_reasoning(rows[i], str(answers[i])), answer=str(answers[i]))
            for i in pending
        ]
        grades = grader.grade(texts, [rows[i].item for i in pending])
        still = []
        for i, text, score in zip(pending, texts, grades.scores, strict=True):
            if grader.correct(score):
                out[i] = text
                used[tpl] = used.get(tpl, 0) + 1
            else:
                still.append(i)
        pending = still
    return out, {"no_reference": sum(a is None for a in answers), "not_accepted": len(pending), **used}
