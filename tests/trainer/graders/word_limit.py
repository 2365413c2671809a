"""A grader type defined outside the package, as a plugin would: everything about it is this module."""

from __future__ import annotations

from typing import Any, Literal

from trainer.graders.errors import GraderValidationError, GradingError
from trainer.graders.fields import GraderFields, TemplateText
from trainer.graders.node import Node, Outcome, Runtime, Scope
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings
from trainer.graders.templates import Template, check_template


class WordLimitGrader(GraderFields):
    """1 within ``max_words`` words, else ``max_words / words``."""

    type: Literal["word_limit"]
    input: TemplateText
    max_words: int


class WordLimitNode(Node):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.input = Template.parse(spec["input"])
        self.max_words: int = spec["max_words"]

    async def _grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        out = []
        for scope in scopes:
            try:
                words = len(self.input.render(scope).split())
            except GradingError as exc:
                out.append(Outcome.failed(exc))
                continue
            out.append(Outcome(1.0 if words <= self.max_words else self.max_words / words))
        return out


class WordLimit(GraderType):
    name = "word_limit"
    schema = WordLimitGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        check_template(out["input"], f"{param}.input")
        limit = out["max_words"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise GraderValidationError(f"{param}.max_words", "must be a positive integer")

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return WordLimitNode(spec)

    def pass_threshold(self, spec: dict[str, Any]) -> float:
        return 0.5  # up to twice the limit still counts as correct

    def templates(self, spec: dict[str, Any]) -> list[str]:
        return [spec["input"]]
