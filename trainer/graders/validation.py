"""``validate_grader``: check a grader spec field by field and return its normalized form.

Errors name the bad field as a dotted path (``grader.graders.b.operation``) so the API can answer 400 with
``param`` set. What is common to every type is checked here (the type, unknown and missing fields, name,
pass_threshold, nesting); each type's own fields are checked and normalized by its module in
``trainer.graders.types`` (e.g. ``neq`` -> ``ne``, a multi grader's ``graders`` as a named dict, score_model's
default ``range``, multiple_choice's default templates).
"""

from __future__ import annotations

from typing import Any

from trainer.graders import registry
from trainer.graders.errors import GraderValidationError
from trainer.graders.fields import number
from trainer.graders.types import BUILTIN

GRADER_TYPES = tuple(t.name for t in BUILTIN)


def validate_grader(spec: Any) -> dict[str, Any]:
    """Validate any grader (including multi) and return its normalized spec; raises GraderValidationError."""
    return _validate(spec, "grader", default_name=None, nested=False)


def validate_sub_grader(spec: Any, param: str, *, default_name: str) -> dict[str, Any]:
    """A multi grader's sub-grader at ``param``, named ``default_name`` unless it has a name."""
    return _validate(spec, param, default_name=default_name, nested=True)


def _validate(spec: Any, param: str, *, default_name: str | None, nested: bool) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise GraderValidationError(param, "must be an object")
    gtype = spec.get("type")
    kind = registry.get(gtype)
    if kind is None:
        raise GraderValidationError(
            f"{param}.type", f"must be one of {', '.join(registry.names())}; got {gtype!r}"
        )
    fields = kind.fields
    for key in spec:
        if key not in fields and key not in ("type", "name"):
            raise GraderValidationError(f"{param}.{key}", f"unknown field for a {gtype} grader")
    for key, required in fields.items():
        if required and key not in spec:
            raise GraderValidationError(f"{param}.{key}", f"is required for a {gtype} grader")
    out = dict(spec)
    name = spec.get("name", default_name or gtype)
    if not isinstance(name, str) or not name.strip():
        raise GraderValidationError(f"{param}.name", "must be a non-empty string")
    out["name"] = name
    if "pass_threshold" in spec:
        number(spec["pass_threshold"], f"{param}.pass_threshold")
    if nested and not kind.nestable:
        raise GraderValidationError(f"{param}.type", f"{gtype} graders cannot be nested")
    kind.check(out, param)
    return out
