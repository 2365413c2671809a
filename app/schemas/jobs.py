"""Fine-tuning job request and response shapes (OpenAI's, plus the ``openrft`` extension object)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from app.openapi_schema import ref

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# Checked by the trainer's validators (errors name the field), typed in the schema (app.openapi_schema).
GraderObject = Annotated[dict[str, Any], WithJsonSchema(ref("Grader"))]


class ReinforcementMethod(BaseModel):
    model_config = ConfigDict(extra="allow")

    grader: GraderObject = Field(description="The grader that scores each sample (the reward).")
    hyperparameters: Annotated[
        dict[str, Any] | None, WithJsonSchema(ref("ReinforcementHyperparameters", nullable=True))
    ] = None
    response_format: dict[str, Any] | None = None


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="allow")

    hyperparameters: Annotated[
        dict[str, Any] | None, WithJsonSchema(ref("SupervisedHyperparameters", nullable=True))
    ] = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: ReinforcementMethod | None = None


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2147483647)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    hyperparameters: dict[str, Any] | None = Field(default=None, description="Deprecated: use method.")
    method: Method | None = None
    openrft: Annotated[dict[str, Any] | None, WithJsonSchema(ref("OpenRFTConfig", nullable=True))] = Field(
        default=None,
        description="OpenRFT extension options (augmentation, synthesis, ICL, PRM, LoRA, budget), every one "
        "optional: docs/options.md lists them with their defaults. Send with the SDK's extra_body.",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > 16:
            raise ValueError("at most 16 metadata pairs")
        for k, v in value.items():
            if len(k) > 64:
                raise ValueError(f"metadata key {k[:20]!r}... is longer than 64 characters")
            if len(v) > 512:
                raise ValueError(f"metadata value for {k!r} is longer than 512 characters")
        return value

    @field_validator("suffix")
    @classmethod
    def _suffix_chars(cls, value: str | None) -> str | None:
        if value is not None and not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("suffix may contain only letters, digits, '-', '_' and '.'")
        return value


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Job(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    suffix: str | None = None
    openrft: dict[str, Any] | None = None


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class CheckpointMetrics(_Open):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: CheckpointMetrics
