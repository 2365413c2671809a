"""Which option letter a reasoning answer chose (the ``multiple_choice`` grader, an OpenRFT extension).

Formats, most explicit first; within a format the LAST occurrence wins (reasoning often discusses options
before concluding):
  1. ``\\boxed{B}``, ``\\boxed{\\text{B}}``, ``\\boxed{(B)}``, ``\\boxed{B. Paris}``, ``<answer>B</answer>``
  2. an answer phrase: "The correct answer is: B", "Answer: (B)", "final answer is **C**", "correct option: D"
  3. a line holding only the letter: "B", "(B)", "B.", "**B**"
Option letters are matched case-sensitively (a lowercase "a" is usually an article).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm|rm|bf)\s*\{([^{}]*)\}")


@lru_cache(maxsize=32)
def _patterns(labels: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    cls = "[" + "".join(re.escape(lab) for lab in labels) + "]"
    # The whole content of a box or tag: the letter, optionally bracketed, optionally followed by its text.
    inner = re.compile(rf"^\s*[\(\[]?\s*({cls})\s*[\)\]]?(?:\s*[.:)\-]\s*.*|\s+.*)?$", re.DOTALL)
    phrase = re.compile(
        r"(?i:\b(?:(?:final|correct|right|best)\s+)?(?:answer|option|choice)\b)"
        r"(?i:\s+(?:is|would\s+be|should\s+be))?"
        r"(?i:\s*(?:option|choice))?\s*[:=\-]?\s*(?:\*\*|__)?\s*[\(\[]?\s*"
        rf"({cls})(?![A-Za-z0-9])"
    )
    line = re.compile(
        rf"^\s*(?:\*\*|__)?\s*[\(\[]?\s*({cls})\s*[\)\]]?\s*[.:]?\s*(?:\*\*|__)?\s*$", re.MULTILINE
    )
    return inner, phrase, line


def _phrase_is_explicit(match: re.Match[str]) -> bool:
    # "option"/"choice" alone ("option A is wrong") is not a conclusion; they count only with a qualifier.
    head = match.group(0).lower()
    return "answer" in head or any(q in head for q in ("final", "correct", "right", "best"))


def extract_choice(text: str, labels: Sequence[str]) -> str | None:
    """The option label chosen in ``text``, or None when no format matches."""
    inner, phrase, line = _patterns(tuple(labels))
    for pattern in (_BOXED, _ANSWER_TAG):
        for content in reversed(pattern.findall(text)):
            m = inner.match(_TEXT_MACRO.sub(r"\1", content).replace("$", ""))
            if m:
                return m.group(1)
    explicit = [m for m in phrase.finditer(text) if _phrase_is_explicit(m)]
    if explicit:
        return explicit[-1].group(1)
    lines = line.findall(text)
    return lines[-1] if lines else None


def normalize_reference(reference: str, labels: Sequence[str]) -> str | None:
    """The label a reference names: ``"B"``, ``"b"``, ``"(B)"``, ``"B. Paris"`` or any extractable format."""
    ref = reference.strip()
    by_upper = {lab.upper(): lab for lab in labels}
    bare = ref.strip("()[]. *:")
    if bare.upper() in by_upper:
        return by_upper[bare.upper()]
    found = extract_choice(ref, labels)
    if found is not None:
        return found
    m = _patterns(tuple(labels))[0].match(ref)
    return m.group(1) if m else None
