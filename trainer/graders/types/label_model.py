"""``label_model``: a judge model picks one of ``labels``; 1 if it is among ``passing_labels``, else 0."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from trainer.graders.errors import GraderValidationError, GradingError
from trainer.graders.fields import GraderFields, string_list
from trainer.graders.registry import ReferenceHints
from trainer.graders.types.judge import GraderMessage, JudgeType, check_model_and_messages


class LabelModelGrader(GraderFields):
    """A model picks one of ``labels``; 1 if it is among ``passing_labels``."""

    type: Literal["label_model"]
    model: str
    input: list[GraderMessage] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)


class LabelModel(JudgeType):
    name = "label_model"
    order = 40
    schema = LabelModelGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        check_model_and_messages(out, param)
        labels = string_list(out["labels"], f"{param}.labels")
        passing = string_list(out["passing_labels"], f"{param}.passing_labels")
        unknown = [p for p in passing if p not in labels]
        if unknown:
            raise GraderValidationError(f"{param}.passing_labels", f"{unknown} are not among labels")

    def instruction(self, spec: dict[str, Any]) -> str:
        labels = ", ".join(json.dumps(lab) for lab in spec["labels"])
        return f'Answer with only a JSON object {{"result": <label>}} where <label> is one of: {labels}.'

    def result_schema(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"result": {"type": "string", "enum": list(spec["labels"])}},
            "required": ["result"],
            "additionalProperties": False,
        }

    def score(self, spec: dict[str, Any], result: Any) -> float:
        if not isinstance(result, str) or result not in spec["labels"]:
            raise GradingError("model_grader_parse_error", f"label {result!r} is not one of {spec['labels']}")
        return 1.0 if result in spec["passing_labels"] else 0.0

    def reference_hints(self, spec: dict[str, Any]) -> ReferenceHints:
        # A passing label is a correct answer for every row: the least specific source.
        return ReferenceHints(
            constants=tuple(
                (f"label_model passing label {lab!r}", str(lab)) for lab in spec["passing_labels"]
            )
        )


GRADER_TYPE = LabelModel()
