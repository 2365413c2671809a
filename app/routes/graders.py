"""/v1/fine_tuning/alpha/graders: run a grader on one sample, or validate a grader."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from app.deps import PrincipalDep, SettingsDep
from app.grading import check_grader_limits, check_judge_models, run_grader_isolated
from app.ratelimit import RateLimited
from app.schemas.common import ERROR_RESPONSES
from app.schemas.jobs import GraderObject
from trainer.graders import validate_grader

# An invalid grader raises GraderValidationError: app.errors answers it with a 400 naming the field.
router = APIRouter(prefix="/fine_tuning/alpha/graders", tags=["graders"], responses=ERROR_RESPONSES)


class GraderRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: GraderObject
    model_sample: str
    item: dict[str, Any] | None = None
    reference_answer: Any = Field(default=None, description="Older SDKs sent this instead of item.")


class GraderRunResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    reward: float
    sub_rewards: dict[str, Any] = Field(default_factory=dict)
    model_grader_token_usage_per_model: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any]


class GraderValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: GraderObject


class GraderValidateResponse(BaseModel):
    grader: dict[str, Any]


@router.post("/run", response_model=GraderRunResponse, dependencies=[Depends(RateLimited("graders"))])
def run_grader_endpoint(body: GraderRunRequest, _: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    check_grader_limits(body.grader, settings)
    spec = validate_grader(body.grader)
    check_judge_models(spec, settings)
    item = body.item
    if item is None and body.reference_answer is not None:
        item = (
            body.reference_answer
            if isinstance(body.reference_answer, dict)
            else {"reference_answer": body.reference_answer}
        )
    return run_grader_isolated(spec, body.model_sample, item or {}, settings)


@router.post(
    "/validate", response_model=GraderValidateResponse, dependencies=[Depends(RateLimited("graders"))]
)
def validate_grader_endpoint(
    body: GraderValidateRequest, _: PrincipalDep, settings: SettingsDep
) -> GraderValidateResponse:
    check_grader_limits(body.grader, settings)
    spec = validate_grader(body.grader)
    check_judge_models(spec, settings)
    return GraderValidateResponse(grader=spec)
