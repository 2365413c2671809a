"""Training and validation rows: loading, the prompt of a row, its reference answer, multiple-choice options."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.interface import TrainerError

RESERVED_KEYS = ("messages", "tools")


@dataclass
class Row:
    """One JSONL row: the chat ``messages`` and every other key as the grader's ``item``."""

    index: int
    messages: list[dict[str, Any]]
    item: dict[str, Any]
    tools: list[dict[str, Any]] | None = None
    source_index: int | None = None
    """For augmented rows: the index of the row it was derived from."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        """Stable id: rows derived by augmentation get ``<source>.<n>``."""
        return str(self.meta.get("uid", self.index))


def content_text(content: Any) -> str:
    """The text of a message content (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def load_rows(
    path: Path, *, method: str, param: str = "training_file", split: str | None = None
) -> list[Row]:
    """Parse a fine-tune JSONL file; every bad line is reported with its number (like OpenAI)."""
    rows: list[Row] = []
    problems: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TrainerError(f"Cannot read {param}: {e}", code=f"invalid_{param}", param=param) from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {lineno}: invalid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {lineno}: expected a JSON object")
            continue
        msgs = obj.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            problems.append(f"line {lineno}: missing 'messages' (a non-empty list of messages)")
            continue
        reply = None
        if method == "reinforcement" and len(msgs) > 1 and msgs[-1].get("role") == "assistant":
            # A reply after the question is a reference answer (rows written for SFT), not part of the prompt.
            reply, msgs = content_text(msgs[-1].get("content")), msgs[:-1]
        if method == "reinforcement" and msgs[-1].get("role") not in ("user", "developer"):
            problems.append(f"line {lineno}: the last message must be from the user")
            continue
        if method == "supervised" and not any(m.get("role") == "assistant" for m in msgs):
            problems.append(f"line {lineno}: no assistant message to learn from")
            continue
        item = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
        meta: dict[str, Any] = {"split": split or ("valid" if param == "validation_file" else "train")}
        if reply and reply.strip():
            meta["assistant_reply"] = reply
        rows.append(Row(index=len(rows), messages=msgs, item=item, tools=obj.get("tools"), meta=meta))
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise TrainerError(f"Invalid {param}: {shown}", code=f"invalid_{param}", param=param)
    if not rows:
        raise TrainerError(f"The {param} has no rows.", code=f"invalid_{param}", param=param)
    return rows


def hold_out(rows: list[Row], k: int, *, seed: int) -> tuple[list[Row], list[Row]]:
    """Split ``k`` rows off (the same ones for the same seed, so a resumed run holds out the same rows); the
    held-out rows are marked ``split="holdout"``."""
    import random

    if k <= 0 or len(rows) < 2:
        return rows, []
    picked = set(random.Random(f"holdout:{seed}").sample(range(len(rows)), min(k, len(rows) - 1)))
    held = [r for r in rows if r.index in picked]
    for r in held:
        r.meta["split"] = "holdout"
    return [r for r in rows if r.index not in picked], held


def question(row: Row) -> str:
    """The text of the last user message (what is paraphrased and embedded for retrieval)."""
    for m in reversed(row.messages):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def with_question(row: Row, text: str) -> list[dict[str, Any]]:
    """The row's messages with the last user message replaced by ``text``."""
    msgs = [dict(m) for m in row.messages]
    for m in reversed(msgs):
        if m.get("role") == "user":
            m["content"] = text
            break
    return msgs


# ---------------------------------------------------------------------------------------------------------------
# Templates: rendered by the graders' own engine, so a template the grader accepts finds the same value here
# ---------------------------------------------------------------------------------------------------------------


def render(template: str, *, item: dict[str, Any], output_text: str = "") -> str | None:
    """Fill ``{{ item.x }}`` / ``{{ item["x"] }}`` / ``{{ sample.output_text }}``; None when a referenced item
    field is missing or the template does not parse."""
    from trainer.graders.errors import GradingError
    from trainer.graders.templates import Sample, Template, TemplateSyntaxError

    try:
        return Template.parse(template).render(
            {"item": item, "sample": Sample.from_text(output_text).as_dict()}
        )
    except (GradingError, TemplateSyntaxError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Multiple choice: options as lines "A. text" / "(A) text" / "A) text" in the question
# ---------------------------------------------------------------------------------------------------------------

_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[.)]\s+(.+?)\s*$")


@dataclass
class Choices:
    """A question split into its stem, its options (in order) and any text after them."""

    stem: str
    labels: list[str]
    texts: list[str]
    tail: str
    style: str
    """Format of the option lines, e.g. "{label}. {text}"."""

    def render(self, stem: str | None = None, order: list[int] | None = None) -> str:
        order = order if order is not None else list(range(len(self.texts)))
        lines = [
            self.style.format(label=lab, text=self.texts[i])
            for lab, i in zip(self.labels, order, strict=True)
        ]
        parts = [stem if stem is not None else self.stem, "\n".join(lines)]
        if self.tail:
            parts.append(self.tail)
        return "\n".join(p for p in parts if p)


def parse_choices(text: str) -> Choices | None:
    """Find a run of option lines labelled A, B, C, ... (at least two) in a question."""
    lines = text.split("\n")
    for start, line in enumerate(lines):
        m = _OPTION_LINE.match(line)
        if not m or m.group(1) != "A":
            continue
        labels: list[str] = []
        texts: list[str] = []
        j = start
        while j < len(lines):
            mm = _OPTION_LINE.match(lines[j])
            if not mm or mm.group(1) != chr(ord("A") + len(labels)):
                break
            labels.append(mm.group(1))
            texts.append(mm.group(2))
            j += 1
        if len(labels) >= 2:
            raw = line.strip()
            style = (
                "({label}) {text}" if raw.startswith("(") else ("{label}) {text}" if raw[1] == ")" else None)
            )
            return Choices(
                stem="\n".join(lines[:start]).rstrip(),
                labels=labels,
                texts=texts,
                tail="\n".join(lines[j:]).strip(),
                style=style or "{label}. {text}",
            )
    return None


def answer_field(item: dict[str, Any], labels: list[str], preferred: str | None = None) -> str | None:
    """The item key holding the answer letter of a multiple-choice row."""
    if preferred and isinstance(item.get(preferred), str) and item[preferred].strip() in labels:
        return preferred
    names = ["answer", "answerKey", "answer_key", "label", "correct", "target", "reference"]
    for k in names + sorted(item):
        v = item.get(k)
        if isinstance(v, str) and v.strip() in labels:
            return k
    return None
