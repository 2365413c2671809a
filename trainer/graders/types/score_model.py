"""``score_model``: a judge model rates the sample with a number in ``range`` (clamped; default [0, 1])."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trainer.graders.errors import GraderValidationError
from trainer.graders.fields import GraderFields, number
from trainer.graders.node import Node
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings
from trainer.graders.types.judge import (
    GraderMessage,
    ModelGraderNode,
    SamplingParams,
    check_model_and_messages,
    check_sampling_params,
    message_templates,
)


class ScoreModelGrader(GraderFields):
    """A model rates the sample with a number in ``range``; by default a model of this service."""

    type: Literal["score_model"]
    model: str = Field(description="A base model here, or one given an endpoint by OPENRFT_GRADER_MODELS.")
    input: list[GraderMessage] = Field(min_length=1)
    range: list[float] | None = Field(default=None, min_length=2, max_length=2, description="Default [0, 1].")
    sampling_params: SamplingParams | None = None


class ScoreModel(GraderType):
    name = "score_model"
    schema = ScoreModelGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        check_model_and_messages(out, param)
        rng = out.get("range")
        if rng is None:
            out["range"] = [0.0, 1.0]
        else:
            if not isinstance(rng, list) or len(rng) != 2:
                raise GraderValidationError(f"{param}.range", "must be two numbers [min, max]")
            lo, hi = number(rng[0], f"{param}.range[0]"), number(rng[1], f"{param}.range[1]")
            if lo >= hi:
                raise GraderValidationError(f"{param}.range", "min must be less than max")
            out["range"] = [lo, hi]
        if out.get("sampling_params") is not None:
            check_sampling_params(out["sampling_params"], f"{param}.sampling_params")

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return ModelGraderNode(spec, settings)

    def pass_threshold(self, spec: dict[str, Any]) -> float:
        # The top of the range (specs not yet validated may lack it).
        return float((spec.get("range") or [0.0, 1.0])[1])

    def templates(self, spec: dict[str, Any]) -> list[str]:
        return message_templates(spec["input"])
