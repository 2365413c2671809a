"""The one prompt builder used by SFT, RL and evaluation (the paper traces its ICL regression to prompts that
differed between stages, so there is exactly one place that decides what the model sees)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.data import Row

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Example:
    """A worked example shown before the question (few-shot ICL): a question and a graded-correct answer."""

    question: str
    answer: str


def build_prompt(
    row: Row, *, system_prompt: str | None = None, examples: list[Example] | None = None
) -> Messages:
    """The conversation the policy answers for ``row``.

    Layout: an optional system message (the task instruction), then each example as a user/assistant turn
    pair, then the row's own messages. Examples go in as real turns rather than pasted text so that the model
    sees them exactly the way it sees its own answers.
    """
    msgs: Messages = []
    own = [dict(m) for m in row.messages]
    if system_prompt:
        if own and own[0].get("role") in ("system", "developer"):
            own[0] = {**own[0], "content": f"{system_prompt}\n\n{own[0].get('content', '')}"}
        else:
            msgs.append({"role": "system", "content": system_prompt})
    if own and own[0].get("role") in ("system", "developer"):
        msgs.append(own.pop(0))
    for ex in examples or []:
        msgs.append({"role": "user", "content": ex.question})
        msgs.append({"role": "assistant", "content": ex.answer})
    msgs.extend(own)
    return msgs


def longest_prompt_tokens(tokenizer: Any, rows: list[Row], *, system_prompt: str | None) -> int:
    """Tokens of the longest prompt of ``rows`` (a supervised row: its whole conversation; the first 500 rows),
    few-shot examples not counted: what the memory estimate sizes a sequence by."""
    longest = 0
    for row in rows[:500]:
        text = tokenizer.apply_chat_template(build_prompt(row, system_prompt=system_prompt), tokenize=False)
        longest = max(longest, len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return max(longest, 1)
