"""``score_model``: a judge model rates the sample with a number in ``range`` (clamped; default [0, 1])."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from trainer.graders.errors import GraderValidationError, GradingError
from trainer.graders.fields import GraderFields, number
from trainer.graders.types.judge import (
    GraderMessage,
    JudgeType,
    SamplingParams,
    check_model_and_messages,
    check_sampling_params,
)

MAX_STEPS = 3
_STEP = {
    "type": "object",
    "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}},
    "required": ["description", "conclusion"],
    "additionalProperties": False,
}


class ScoreModelGrader(GraderFields):
    """A model rates the sample with a number in ``range``; by default a model of this service."""

    type: Literal["score_model"]
    model: str = Field(description="A base model here, or one given an endpoint by OPENRFT_GRADER_MODELS.")
    input: list[GraderMessage] = Field(min_length=1)
    range: list[float] | None = Field(default=None, min_length=2, max_length=2, description="Default [0, 1].")
    sampling_params: SamplingParams | None = None


class ScoreModel(JudgeType):
    name = "score_model"
    order = 30
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

    def pass_threshold(self, spec: dict[str, Any]) -> float:
        # The top of the range (specs not yet validated may lack it).
        return float((spec.get("range") or [0.0, 1.0])[1])

    def instruction(self, spec: dict[str, Any]) -> str:
        lo, hi = spec["range"]
        return (
            'Answer with only a JSON object {"steps": [{"description": ..., "conclusion": ...}], '
            f'"result": <a number from {lo:g} to {hi:g}>}}.'
        )

    def result_schema(self, spec: dict[str, Any]) -> dict[str, Any]:
        lo, hi = spec["range"]
        # Bounded steps and result: under constrained decoding a small judge otherwise writes steps until
        # its token budget runs out and never reaches the result.
        steps = {"type": "array", "items": _STEP, "maxItems": MAX_STEPS}
        return {
            "type": "object",
            "properties": {"steps": steps, "result": {"type": "number", "minimum": lo, "maximum": hi}},
            "required": ["steps", "result"],
            "additionalProperties": False,
        }

    def score(self, spec: dict[str, Any], result: Any) -> float:
        if isinstance(result, str):
            try:
                result = float(result.strip())
            except ValueError:
                pass
        if isinstance(result, bool) or not isinstance(result, int | float) or not math.isfinite(result):
            raise GradingError("model_grader_parse_error", f"result {result!r} is not a number")
        lo, hi = spec["range"]
        return min(hi, max(lo, float(result)))


GRADER_TYPE = ScoreModel()
