"""``multiple_choice`` (OpenRFT): 1 if the option letter a reasoning answer chose is the reference's.

How the letter is found in free reasoning is trainer.graders.choice's; defaults make the bare
``{"type": "multiple_choice"}`` grade ``sample.output_text`` against ``item.answer`` over options A-J.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from trainer.graders.errors import GraderValidationError
from trainer.graders.fields import GraderFields, TemplateText, check_templates, string_list
from trainer.graders.node import Node, Outcome, PairNode, Runtime
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings

DEFAULT_CHOICE_LABELS = list("ABCDEFGHIJ")


class MultipleChoiceGrader(GraderFields):
    """OpenRFT: 1 if the sample's chosen option letter equals the reference letter."""

    type: Literal["multiple_choice"]
    input: TemplateText | None = Field(default=None, description="Default {{ sample.output_text }}.")
    reference: TemplateText | None = Field(default=None, description="Default {{ item.answer }}.")
    labels: list[str] | None = Field(default=None, description="Default A-J.")


class MultipleChoiceNode(PairNode):
    async def score_pairs(self, pairs: list[tuple[str, str]], rt: Runtime) -> list[Outcome]:
        from trainer.graders.choice import extract_choice, normalize_reference

        labels: list[str] = self.spec["labels"]
        out = []
        for text, ref in pairs:
            want = normalize_reference(ref, labels)
            got = extract_choice(text, labels)
            if want is None:
                out.append(
                    Outcome(0.0, [("invalid_variable_error", f"reference {ref[:100]!r} names no option")])
                )
            elif got is None:
                out.append(Outcome(0.0, [("sample_parse_error", "no option letter found in the answer")]))
            else:
                out.append(Outcome(1.0 if got == want else 0.0))
        return out


class MultipleChoice(GraderType):
    name = "multiple_choice"
    order = 70
    schema = MultipleChoiceGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        out.setdefault("input", "{{ sample.output_text }}")
        out.setdefault("reference", "{{ item.answer }}")
        check_templates(out, param)
        labels = string_list(out.get("labels", DEFAULT_CHOICE_LABELS), f"{param}.labels")
        if not all(re.fullmatch(r"[A-Za-z0-9]", lab) for lab in labels):
            raise GraderValidationError(f"{param}.labels", "labels must be single letters or digits")
        out["labels"] = labels

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return MultipleChoiceNode(spec)

    def templates(self, spec: dict[str, Any]) -> list[str]:
        return [spec["input"], spec["reference"]]


GRADER_TYPE = MultipleChoice()
