"""``label_model``: a judge model picks one of ``labels``; 1 if it is among ``passing_labels``, else 0."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trainer.graders.errors import GraderValidationError
from trainer.graders.fields import GraderFields, string_list
from trainer.graders.node import Node
from trainer.graders.registry import GraderType, ReferenceHints
from trainer.graders.settings import GraderSettings
from trainer.graders.types.judge import (
    GraderMessage,
    ModelGraderNode,
    check_model_and_messages,
    message_templates,
)


class LabelModelGrader(GraderFields):
    """A model picks one of ``labels``; 1 if it is among ``passing_labels``."""

    type: Literal["label_model"]
    model: str
    input: list[GraderMessage] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)


class LabelModel(GraderType):
    name = "label_model"
    schema = LabelModelGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        check_model_and_messages(out, param)
        labels = string_list(out["labels"], f"{param}.labels")
        passing = string_list(out["passing_labels"], f"{param}.passing_labels")
        unknown = [p for p in passing if p not in labels]
        if unknown:
            raise GraderValidationError(f"{param}.passing_labels", f"{unknown} are not among labels")

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return ModelGraderNode(spec, settings)

    def templates(self, spec: dict[str, Any]) -> list[str]:
        return message_templates(spec["input"])

    def reference_hints(self, spec: dict[str, Any]) -> ReferenceHints:
        # A passing label is a correct answer for every row: the least specific source.
        labels = spec.get("passing_labels")
        return ReferenceHints(
            constants=tuple((f"label_model passing label {lab!r}", str(lab)) for lab in labels or [])
        )
