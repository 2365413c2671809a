"""The grader objects as JSON Schema, for the OpenAPI document.

Requests are checked by ``trainer.graders.validate_grader`` (it names the bad field in ``param`` and
normalizes the spec); these models only describe what it accepts, OpenAI's types plus OpenRFT's
``multiple_choice`` and ``endpoint``. A test validates examples of every type against both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Template = Annotated[
    str,
    Field(
        description="Text with {{ sample.output_text }}, {{ sample.output_json.* }} and {{ item.* }} fields."
    ),
]


def _omit_not_null(schema: dict[str, Any]) -> None:
    """Optional fields are left out, not sent as null (the validator refuses a null name or threshold)."""
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del prop["anyOf"]
            if len(rest) == 1:
                prop.update(rest[0])
            else:
                prop["anyOf"] = rest
            if prop.get("default", 0) is None:
                del prop["default"]


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_omit_not_null)

    name: str | None = Field(default=None, description="Defaults to the type (in a multi grader: its key).")
    pass_threshold: float | None = Field(
        default=None, description="A sample whose score reaches this counts as correct (accuracy, synthesis)."
    )


class StringCheckGrader(_Grader):
    """1 if the comparison holds, else 0."""

    type: Literal["string_check"]
    input: Template
    reference: Template
    operation: Literal["eq", "ne", "neq", "like", "ilike"] = Field(
        description="eq / ne (neq): exact; like / ilike: contains (ilike ignores case)."
    )


class TextSimilarityGrader(_Grader):
    """A similarity score in [0, 1] between the rendered input and reference."""

    type: Literal["text_similarity"]
    input: Template
    reference: Template
    evaluation_metric: Literal[
        "cosine", "fuzzy_match", "bleu", "gleu", "meteor",
        "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
    ]  # fmt: skip


class GraderMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_omit_not_null)

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | dict[str, Any] | list[dict[str, Any]] = Field(
        description="A template string, or input_text / output_text / input_image parts."
    )


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    max_completions_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: str | None = None


class ScoreModelGrader(_Grader):
    """A model rates the sample with a number in ``range``; by default a model of this service."""

    type: Literal["score_model"]
    model: str = Field(description="A base model here, or one given an endpoint by OPENRFT_GRADER_MODELS.")
    input: list[GraderMessage] = Field(min_length=1)
    range: list[float] | None = Field(default=None, min_length=2, max_length=2, description="Default [0, 1].")
    sampling_params: SamplingParams | None = None


class LabelModelGrader(_Grader):
    """A model picks one of ``labels``; 1 if it is among ``passing_labels``."""

    type: Literal["label_model"]
    model: str
    input: list[GraderMessage] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)


class PythonGrader(_Grader):
    """``def grade(sample, item) -> float`` run in a sandbox (no network, CPU/memory/time limits)."""

    type: Literal["python"]
    source: str = Field(description="Python source (under 256 kB) defining grade(sample, item).")
    image_tag: str | None = Field(default=None, description="Accepted for compatibility; there is one image.")


class MultiGrader(_Grader):
    """Several named graders combined by a formula over their scores."""

    type: Literal["multi"]
    graders: dict[str, InnerGrader] = Field(
        description="Graders by name (a list with names is accepted too); not multi graders themselves."
    )
    calculate_output: str = Field(description="e.g. '0.5 * a + 0.5 * b'; +, -, *, /, ^, min, max, abs, ...")


class MultipleChoiceGrader(_Grader):
    """OpenRFT: 1 if the sample's chosen option letter equals the reference letter."""

    type: Literal["multiple_choice"]
    input: Template | None = Field(default=None, description="Default {{ sample.output_text }}.")
    reference: Template | None = Field(default=None, description="Default {{ item.answer }}.")
    labels: list[str] | None = Field(default=None, description="Default A-J.")


class EndpointGrader(_Grader):
    """OpenRFT: POSTs {sample, item} to your HTTP service, which answers {"score": float}."""

    type: Literal["endpoint"]
    url: str = Field(description="http(s) URL; private addresses only where the deployment allows them.")
    headers: dict[str, str] | None = None
    timeout_s: float | None = Field(default=None, gt=0)


InnerGrader = Annotated[
    StringCheckGrader
    | TextSimilarityGrader
    | ScoreModelGrader
    | LabelModelGrader
    | PythonGrader
    | MultipleChoiceGrader
    | EndpointGrader,
    Field(discriminator="type"),
]
MultiGrader.model_rebuild()
Grader = Annotated[InnerGrader | MultiGrader, Field(discriminator="type")]

GRADER_MODELS: tuple[type[BaseModel], ...] = (
    StringCheckGrader,
    TextSimilarityGrader,
    ScoreModelGrader,
    LabelModelGrader,
    PythonGrader,
    MultiGrader,
    MultipleChoiceGrader,
    EndpointGrader,
)
