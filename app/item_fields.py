"""Job creation checks a grader's ``{{ item.* }}`` references against the job's rows, so a typo in a field
name is a 400 naming it instead of a job that trains on zero reward (every sample an
``invalid_variable_error``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from openrft.validation import check_row
from trainer.graders import registry
from trainer.graders.errors import GradingError
from trainer.graders.templates import TemplateSyntaxError, Variable, parse_variable

# Rows looked at per file: enough to catch a misspelt field, bounded for files of any size.
MAX_ROWS = 200
MAX_BYTES = 8 * 1024 * 1024


def item_variables(spec: dict[str, Any]) -> Iterator[Variable]:
    """Every ``item.*`` variable in the templates of a validated grader (each type names its templates),
    sub-graders included."""
    for node in registry.walk(spec):
        for template in registry.of(node).templates(node):
            yield from template_item_variables(template)


def template_item_variables(template: str) -> Iterator[Variable]:
    start = template.find("{{")
    while start >= 0:
        end = template.find("}}", start + 2)
        if end < 0:
            return
        try:
            variable = parse_variable(template[start + 2 : end])
        except TemplateSyntaxError:
            variable = None  # the grader's validation reports these
        if variable is not None and variable.namespace == "item":
            yield variable
        start = template.find("{{", end + 2)


def bounded_lines(fh: BinaryIO, max_line: int) -> Iterator[bytes]:
    """The file's lines, none read past ``max_line`` bytes: at a longer line the check stops (file validation,
    in the worker, reports that line; a 300 MiB line must not be read into the API's memory)."""
    while line := fh.readline(max_line + 1):
        if len(line) > max_line:
            return
        yield line


def rows(lines: Iterator[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of the first rows that parse (file validation reports the others)."""
    seen = read = 0
    for number, raw in enumerate(lines, start=1):
        read += len(raw)
        if seen >= MAX_ROWS or read > MAX_BYTES:
            return
        try:
            row = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # a nesting bomb too: validation reports it
            continue
        # An invalid row is file validation's to report, with its line number and reason.
        if isinstance(row, dict) and check_row(row, "reinforcement") is None:
            seen += 1
            yield number, row


def first_missing(
    variables: list[Variable], lines: Iterator[bytes]
) -> tuple[Variable, int, dict[str, Any]] | None:
    """The first variable a row lacks: (variable, line number, row), or None when every row has them all."""
    for number, row in rows(lines):
        for variable in variables:
            try:
                variable.resolve({"item": row})
            except GradingError:
                return variable, number, row
    return None
