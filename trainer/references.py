"""Reference responses: a row's reference answer written as a response the grader accepts.

Used where the paper falls back to the reference answer (no sampled trace was correct) and as the answers of
the few-shot ICL examples. Each response is checked with the job's grader, so only graded-correct text is ever
trained on or shown as an example.

Where the answer lives is found, not assumed: ``openrft.reference`` when set, else every place a user's data
may hold it, tried in order (:func:`reference_sources`): the grader's own reference templates (``string_check``,
``text_similarity``, each sub-grader of ``multi``), the item fields a ``python`` grader reads, ``label_model``
passing labels, common answer fields of the row, and a trailing assistant message. Each row takes the first
source whose answer the grader accepts. Where the task allows, the response carries a short worked reasoning:
the row's own explanation field, or (multiple choice) each option checked against the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.data import Row, parse_choices, question, render
from trainer.graders import registry

if TYPE_CHECKING:
    from trainer.grading import Grader

# Forms a reference answer is written in, tried in order when response_template is "auto"; the reasoning part
# is used only where the row offers one (a filler sentence would teach the model nothing but the filler).
AUTO_TEMPLATES = [
    "{reasoning}\n\nThe correct answer is: \\boxed{{answer}}",
    "{reasoning}\n\nAnswer: {answer}",
    "{reasoning}\n\n{answer}",
    "{answer}",
]
REASONING_FIELDS = ("explanation", "rationale", "reasoning", "solution", "justification")
# Item fields that commonly hold the answer in users' data, in the order they are tried.
ANSWER_FIELDS = (
    "answer",
    "label",
    "reference",
    "target",
    "solution",
    "expected",
    "ground_truth",
    "correct_answer",
    "answerKey",
    "answer_key",
    "output",
    "gold",
)


@dataclass(frozen=True)
class ReferenceSource:
    """One place a row's reference answer may be: ``answer(row)`` is None where the row has nothing there."""

    name: str
    answer: Callable[[Row], str | None]


def _template_source(name: str, template: str) -> ReferenceSource:
    return ReferenceSource(name, lambda row: render(template, item=row.item))


def _field_source(key: str) -> ReferenceSource:
    def answer(row: Row) -> str | None:
        v = row.item.get(key)
        if v is None or isinstance(v, dict | list) or (isinstance(v, str) and not v.strip()):
            return None
        return v if isinstance(v, str) else str(v)

    return ReferenceSource(f"item.{key}", answer)


def reference_sources(
    grader_spec: dict[str, Any] | None, rows: list[Row], override: str | None = None
) -> list[ReferenceSource]:
    """Where the rows' reference answers may be, most specific first (see the module docstring)."""
    if override:
        return [_template_source(f"openrft.reference {override!r}", override)]
    sources: list[ReferenceSource] = []
    seen: set[str] = set()

    def add(src: ReferenceSource) -> None:
        if src.name not in seen:
            seen.add(src.name)
            sources.append(src)

    fields: list[str] = []
    constants: list[tuple[str, str]] = []
    for node in registry.walk(grader_spec) if grader_spec else []:
        hints = registry.of(node).reference_hints(node)
        for ref in hints.templates:
            add(_template_source(f"grader reference {ref!r}", ref))
        fields += hints.item_fields
        constants += hints.constants
    present = {k for r in rows for k in r.item}
    lowered = {k.lower(): k for k in sorted(present)}
    for key in fields + [lowered[f.lower()] for f in ANSWER_FIELDS if f.lower() in lowered]:
        if key in present:
            add(_field_source(key))
    if any(r.meta.get("assistant_reply") for r in rows):
        add(ReferenceSource("the trailing assistant message", lambda row: row.meta.get("assistant_reply")))
    for name, value in constants:  # e.g. a judge's passing label, the same for every row: the least specific
        add(_constant_source(name, value))
    return sources


def _constant_source(name: str, value: str) -> ReferenceSource:
    return ReferenceSource(name, lambda row: value)


def worked_reasoning(row: Row, answer: str) -> str | None:
    """A short reasoning that leads to ``answer`` from what the row itself offers (its own explanation field;
    for multiple choice, each option checked against the answer), or None where it offers nothing."""
    choices = parse_choices(question(row))
    own = next((str(row.item[k]).strip() for k in REASONING_FIELDS if _text(row.item.get(k))), None)
    parts = [own] if own else []
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
    return "\n\n".join(parts) if parts else None


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def form(template: str, reasoning: str | None) -> str:
    """The template a row's response is written in: without a reasoning, what stands before the answer's own
    line goes (``{reasoning}\n\nAnswer: {answer}`` becomes ``Answer: {answer}``)."""
    if reasoning is None and "{reasoning}" in template:
        return template.split("{reasoning}", 1)[1].lstrip()
    return template


def fill(template: str, *, reasoning: str | None, answer: str) -> str:
    # str.replace, not str.format: templates contain literal braces (\boxed{...}).
    return (
        form(template, reasoning).replace("{reasoning}", reasoning or "").replace("{answer}", answer).strip()
    )


def preferred_templates(instruction: str) -> list[str]:
    """The auto templates, the one the task's instruction asks for first (a trace should follow the prompt):
    the paper's boxed answer, an "Answer:" line, else the answer on its own line after any reasoning (for a row
    without a reasoning: the bare answer), then the bare answer alone."""
    boxed, line, after_reasoning, bare = AUTO_TEMPLATES
    if "\\boxed" in instruction:
        return [boxed, line, after_reasoning, bare]
    if "answer:" in instruction.lower():
        return [line, boxed, after_reasoning, bare]
    return [after_reasoning, bare, line, boxed]


@dataclass
class References:
    """A graded-correct response per row (None where none passes) and where each came from."""

    responses: list[str | None]
    by_source: dict[str, int]
    """Rows answered per source."""
    tried: dict[str, tuple[int, int]]
    """Per source: (rows that have an answer there, rows whose answer the grader accepted)."""
    by_template: dict[str, int]

    def summary(self) -> str:
        n, ok = len(self.responses), sum(r is not None for r in self.responses)
        if ok:
            used = ", ".join(f"{src} for {k}" for src, k in self.by_source.items())
            return f"{ok}/{n} training rows have a reference response the grader accepts: {used}."
        if not self.tried:
            return (
                f"None of the {n} training rows has a reference answer: the grader declares no reference and the "
                f"rows have none of the fields {', '.join(ANSWER_FIELDS[:8])} nor a trailing assistant message."
            )
        tried = "; ".join(f"{src}: {acc} of {has} accepted" for src, (has, acc) in self.tried.items())
        return f"None of the {n} training rows has a reference answer the grader accepts (tried {tried})."


def reference_responses(
    rows: list[Row],
    grader: Grader,
    *,
    grader_spec: dict[str, Any] | None,
    reference: str | None,
    template: str = "auto",
    instruction: str = "",
) -> References:
    """For each row, the first source (:func:`reference_sources`) and form whose response the grader accepts.

    ``instruction`` (the task's instructions: system prompt and question) decides which auto form is tried first.
    """
    sources = reference_sources(grader_spec, rows, reference)
    templates = preferred_templates(instruction) if template == "auto" else [template]
    out: list[str | None] = [None] * len(rows)
    by_source: dict[str, int] = {}
    by_template: dict[str, int] = {}
    tried: dict[str, tuple[int, int]] = {}
    for src in sources:
        answers = {i: src.answer(rows[i]) for i, r in enumerate(out) if r is None}
        pending = [i for i, a in answers.items() if a]
        has = len(pending)
        reasoning = {i: worked_reasoning(rows[i], str(answers[i])) for i in pending}
        seen: dict[int, set[str]] = {i: set() for i in pending}
        for tpl in templates:
            # A form that a missing reasoning makes identical to one already tried for the row is not re-graded.
            todo = [i for i in pending if form(tpl, reasoning[i]) not in seen[i]]
            if not todo:
                continue
            texts = [fill(tpl, reasoning=reasoning[i], answer=str(answers[i])) for i in todo]
            grades = grader.grade(texts, [rows[i].item for i in todo])
            for i, text, score in zip(todo, texts, grades.scores, strict=True):
                used = form(tpl, reasoning[i])
                seen[i].add(used)
                if grader.correct(score) and text:
                    out[i] = text
                    by_source[src.name] = by_source.get(src.name, 0) + 1
                    by_template[used] = by_template.get(used, 0) + 1
            pending = [i for i in pending if out[i] is None]
        if has:
            tried[src.name] = (has, has - len(pending))
        if all(r is not None for r in out):
            break
    return References(out, by_source, tried, by_template)
