"""``string_check``: 1 if the rendered input and reference compare as ``operation`` says, else 0."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trainer.graders.fields import GraderFields, TemplateText, check_templates, one_of
from trainer.graders.node import Node, Outcome, PairNode, Runtime
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings

STRING_OPERATIONS = ("eq", "ne", "like", "ilike")


class StringCheckGrader(GraderFields):
    """1 if the comparison holds, else 0."""

    type: Literal["string_check"]
    input: TemplateText
    reference: TemplateText
    operation: Literal["eq", "ne", "neq", "like", "ilike"] = Field(
        description="eq / ne (neq): exact; like / ilike: contains (ilike ignores case)."
    )


def compare(op: str, text: str, ref: str) -> bool:
    if op == "eq":
        return text == ref
    if op == "ne":
        return text != ref
    if op == "like":
        return ref in text
    return ref.casefold() in text.casefold()


class StringCheckNode(PairNode):
    async def score_pairs(self, pairs: list[tuple[str, str]], rt: Runtime) -> list[Outcome]:
        op = self.spec["operation"]
        return [Outcome(1.0 if compare(op, text, ref) else 0.0) for text, ref in pairs]


class StringCheck(GraderType):
    name = "string_check"
    order = 10
    schema = StringCheckGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        check_templates(out, param)
        # OpenAI's guides spell ne "neq".
        op = "ne" if out["operation"] == "neq" else out["operation"]
        out["operation"] = one_of(op, STRING_OPERATIONS, f"{param}.operation")

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return StringCheckNode(spec)

    def templates(self, spec: dict[str, Any]) -> list[str]:
        return [spec["input"], spec["reference"]]


GRADER_TYPE = StringCheck()
