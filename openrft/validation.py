"""Line-by-line validation of fine-tuning JSONL files.

The server's worker and this client share this one implementation, so a file checked locally before
upload gets exactly the errors the server would report (line numbers are 1-based).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

Method = Literal["reinforcement", "supervised", "dpo"]
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_REPORTED = 50
MAX_LINE_BYTES = 32 << 20  # the server's default too (OPENRFT_MAX_LINE_BYTES)


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


@dataclass
class ValidationReport:
    examples: int = 0
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add(self, line: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(LineError(line, reason))

    def summary(self, label: str = "training file") -> str:
        if self.ok:
            return f"The {label} is valid ({self.examples} examples)."
        shown = "; ".join(str(e) for e in self.errors)
        more = self.error_count - len(self.errors)
        tail = f"; and {more} more" if more > 0 else ""
        return (
            f"The {label} has {self.error_count} invalid line{'s' * (self.error_count != 1)}: {shown}{tail}."
        )


def _check_message(msg: Any, index: int) -> str | None:
    if not isinstance(msg, dict):
        return f"messages[{index}] is not an object"
    role = msg.get("role")
    if role not in ROLES:
        return f"messages[{index}].role is {role!r}; expected one of {', '.join(sorted(ROLES))}"
    content = msg.get("content")
    if content is None:
        if role == "assistant" and (msg.get("tool_calls") or msg.get("function_call")):
            return None
        return f"messages[{index}] has no content"
    if not isinstance(content, str | list):
        return f"messages[{index}].content must be a string or a list of content parts"
    return None


def check_row(row: Any, method: Method) -> str | None:
    """Why ``row`` is not a valid example for ``method``, or None if it is."""
    if not isinstance(row, dict):
        return f"each line must be a JSON object, got {type(row).__name__}"
    if method == "dpo":
        if "input" not in row or "preferred_output" not in row or "non_preferred_output" not in row:
            return "DPO rows need 'input', 'preferred_output' and 'non_preferred_output'"
        return None
    messages = row.get("messages")
    if messages is None:
        return "missing 'messages'"
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, msg in enumerate(messages):
        problem = _check_message(msg, i)
        if problem:
            return problem
    if "tools" in row and not isinstance(row["tools"], list):
        return "'tools' must be a list"
    if method == "reinforcement":
        # A trailing assistant reply after the question is taken as the row's reference answer.
        last = messages[-2] if len(messages) > 1 and messages[-1].get("role") == "assistant" else messages[-1]
        if last.get("role") not in ("user", "developer"):
            return f"the last message must be from 'user' for reinforcement fine-tuning, not {last.get('role')!r}"
    elif method == "supervised" and not any(m.get("role") == "assistant" for m in messages):
        return "no 'assistant' message: supervised examples need the response to learn"
    return None


class BoundedLines:
    """The lines of a binary file, none held longer than ``max_bytes``: a longer line is read through in
    blocks, yielded as None and never parsed, so a single 500 MB line costs no more memory than a short one."""

    def __init__(self, fh: BinaryIO | io.IOBase, max_bytes: int) -> None:
        self.fh = fh
        self.max_bytes = max_bytes

    def __iter__(self) -> Iterator[bytes | None]:
        while line := self.fh.readline(self.max_bytes + 1):
            if len(line) > self.max_bytes and not line.endswith(b"\n"):
                while (rest := self.fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                yield None
            else:
                yield line


def validate_stream(
    stream: BinaryIO | Iterable[bytes], method: Method, *, max_line_bytes: int = MAX_LINE_BYTES
) -> ValidationReport:
    """Check every line of ``stream``; lines longer than ``max_line_bytes`` are reported, not parsed."""
    report = ValidationReport()
    lines: Iterable[bytes | None] = (
        BoundedLines(stream, max_line_bytes) if isinstance(stream, io.IOBase) else stream
    )
    for number, raw in enumerate(lines, start=1):
        if raw is None or len(raw) > max_line_bytes:
            report.add(number, f"line longer than {max_line_bytes} bytes")
            continue
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.add(number, f"not valid UTF-8 (byte {exc.start})")
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            report.add(number, f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:  # the parser recurses per nesting level: a hostile row stops here, alone
            report.add(number, "JSON nested too deeply")
            continue
        problem = check_row(row, method)
        if problem:
            report.add(number, problem)
        else:
            report.examples += 1
    if report.examples == 0 and report.error_count == 0:
        report.add(0, "the file has no examples")
    return report


def validate_file(
    path: str | Path, method: Method, *, max_line_bytes: int = MAX_LINE_BYTES
) -> ValidationReport:
    with Path(path).open("rb") as fh:
        return validate_stream(fh, method, max_line_bytes=max_line_bytes)
