"""What grader types share about their fields: the JSON Schema base model and the value checks.

Each type declares its fields as a pydantic model (``GraderFields`` subclass): the validator reads which
fields it accepts and requires from it, and the OpenAPI document shows it. The models only describe; the
checks that name the bad field in ``param`` and normalize the spec are the type's ``check``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from trainer.graders.errors import GraderValidationError
from trainer.graders.templates import check_template

TemplateText = Annotated[
    str,
    Field(
        description="Text with {{ sample.output_text }}, {{ sample.output_json.* }} and {{ item.* }} fields."
    ),
]


def omit_not_null(schema: dict[str, Any]) -> None:
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


class GraderFields(BaseModel):
    """The fields every grader has; a type's model adds ``type: Literal[...]`` and its own."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=omit_not_null)

    name: str | None = Field(default=None, description="Defaults to the type (in a multi grader: its key).")
    pass_threshold: float | None = Field(
        default=None, description="A sample whose score reaches this counts as correct (accuracy, synthesis)."
    )


def number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GraderValidationError(param, "must be a finite number")
    return float(value)


def string_list(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise GraderValidationError(param, "must be a non-empty list of non-empty strings")
    if len(set(value)) != len(value):
        raise GraderValidationError(param, "must not contain duplicates")
    return list(value)


def one_of(value: Any, allowed: tuple[str, ...], param: str) -> str:
    if value not in allowed:
        raise GraderValidationError(param, f"must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def check_templates(out: dict[str, Any], param: str, keys: tuple[str, ...] = ("input", "reference")) -> None:
    """The fields ``keys`` of ``out`` are templates that parse."""
    for key in keys:
        check_template(out[key], f"{param}.{key}")
