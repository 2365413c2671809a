"""``{{ item.a.b }}`` / ``{{ sample.output_tools[0].function.name }}`` templates, and the sample namespace.

A template is parsed once (at validation and engine construction) into literal text and variable paths;
rendering a missing path raises :class:`GradingError` with ``invalid_variable_error`` (the sample scores 0).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from trainer.graders.errors import GradingError

NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")

_VARIABLE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# One path step: `.name`, `[3]`, `["key"]` or `['key']`.
_STEP = re.compile(r"""\.([A-Za-z0-9_\-$]+)|\[(-?\d+)\]|\[\s*"([^"]*)"\s*\]|\[\s*'([^']*)'\s*\]""")


class TemplateSyntaxError(ValueError):
    """A ``{{ ... }}`` that is not ``namespace.path``."""


@dataclass(frozen=True)
class Variable:
    namespace: str
    path: tuple[str | int, ...]
    text: str

    def resolve(self, scope: dict[str, Any]) -> Any:
        value = scope.get(self.namespace)
        if value is None:
            raise GradingError(
                "invalid_variable_error", f"{{{{ {self.text} }}}}: no `{self.namespace}` given"
            )
        for step in self.path:
            if isinstance(step, int):
                ok = isinstance(value, list) and -len(value) <= step < len(value)
            else:
                ok = isinstance(value, dict) and step in value
            if not ok:
                raise GradingError("invalid_variable_error", f"{{{{ {self.text} }}}}: no value at {step!r}")
            value = value[step]
        return value


def parse_variable(text: str) -> Variable:
    """Parse ``item.a[0]["b c"]``; raises TemplateSyntaxError."""
    text = text.strip()
    m = re.match(r"[A-Za-z_]\w*", text)
    if not m or m.group(0) not in NAMESPACES:
        raise TemplateSyntaxError(f"{{{{ {text} }}}}: variables must start with `item.` or `sample.`")
    namespace, pos, path = m.group(0), m.end(), []
    while pos < len(text):
        step = _STEP.match(text, pos)
        if not step:
            raise TemplateSyntaxError(f"{{{{ {text} }}}}: cannot parse the path at {text[pos:]!r}")
        name, index, dq, sq = step.groups()
        path.append(int(index) if index is not None else next(s for s in (name, dq, sq) if s is not None))
        pos = step.end()
    if namespace == "sample" and (not path or path[0] not in SAMPLE_FIELDS):
        raise TemplateSyntaxError(f"{{{{ {text} }}}}: `sample` has only {', '.join(SAMPLE_FIELDS)}")
    return Variable(namespace, tuple(path), text)


def to_text(value: Any) -> str:
    """How a value is substituted: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _literal(source: str, start: int, end: int) -> str:
    # "{{" always opens a variable: one left in literal text is a variable missing its "}}".
    opened = source.find("{{", start, end)
    if opened >= 0:
        raise TemplateSyntaxError(
            f"unterminated '{{{{' at character {opened}: close the variable with '}}}}'"
        )
    return source[start:end]


@dataclass(frozen=True)
class Template:
    """A parsed template: alternating literal text and variables."""

    source: str
    parts: tuple[str | Variable, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        parts: list[str | Variable] = []
        pos = 0
        for m in _VARIABLE.finditer(source):
            if m.start() > pos:
                parts.append(_literal(source, pos, m.start()))
            parts.append(parse_variable(m.group(1)))
            pos = m.end()
        if pos < len(source):
            parts.append(_literal(source, pos, len(source)))
        return cls(source, tuple(parts))

    @property
    def variables(self) -> list[Variable]:
        return [p for p in self.parts if isinstance(p, Variable)]

    def render(self, scope: dict[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else to_text(p.resolve(scope)) for p in self.parts)

    def resolve(self, scope: dict[str, Any]) -> Any:
        """The raw value when the template is exactly one variable (e.g. a list for labels), else text."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Variable):
            return self.parts[0].resolve(scope)
        return self.render(scope)


def check_template(source: Any, param: str) -> None:
    """Raise GraderValidationError (via the caller's param) for a non-string or unparsable template."""
    from trainer.graders.errors import GraderValidationError

    if not isinstance(source, str):
        raise GraderValidationError(param, "must be a string")
    try:
        Template.parse(source)
    except TemplateSyntaxError as exc:
        raise GraderValidationError(param, str(exc)) from None


@dataclass
class Sample:
    """The ``sample`` namespace: what the model produced for one prompt."""

    output_text: str = ""
    output_json: Any = None
    output_tools: list[dict[str, Any]] = field(default_factory=list)
    choices: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, *, tool_calls: list[dict[str, Any]] | None = None) -> Sample:
        """A sample from a completion's text; ``output_json`` is filled when the text is a JSON object/array."""
        output_json = None
        stripped = text.strip()
        if stripped[:1] in ("{", "["):
            try:
                output_json = json.loads(stripped)
            except ValueError:
                output_json = None
        tools = list(tool_calls or [])
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tools:
            message["tool_calls"] = tools
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if tools else "stop"}
        return cls(output_text=text, output_json=output_json, output_tools=tools, choices=[choice])

    def as_dict(self) -> dict[str, Any]:
        return {
            "output_text": self.output_text,
            "output_json": self.output_json,
            "output_tools": self.output_tools,
            "choices": self.choices,
        }
