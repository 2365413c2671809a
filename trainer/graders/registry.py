"""The grader registry: type name -> the grader type object that knows everything about that type.

A grader type (one module of ``trainer.graders.types`` each) declares its fields, checks and normalizes a
spec, builds its engine node, and answers what the rest of the service asks of a grader: its pass threshold,
its templates (checked against the job's rows), where its reference answers are, its sub-graders. Validation,
the engine, the OpenAPI schema, reference finding and the item-field check look types up here, so adding a
type is its module (registered in ``trainer.graders.types``) and its test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from trainer.graders.fields import GraderFields
    from trainer.graders.node import Node
    from trainer.graders.settings import GraderSettings


@dataclass(frozen=True)
class ReferenceHints:
    """Where a grader finds a row's reference answer (trainer.references tries them as answer sources)."""

    templates: tuple[str, ...] = ()
    """Templates over the item that render the reference."""
    item_fields: tuple[str, ...] = ()
    """Item fields the grader reads."""
    constants: tuple[tuple[str, str], ...] = ()
    """(source name, answer): answers the same for every row."""


class GraderType:
    """One grader type. Subclasses set ``name`` and ``schema`` and implement ``check`` and ``node``."""

    name: ClassVar[str]
    schema: ClassVar[type[GraderFields]]
    """The type's fields (the validator's list of accepted and required fields; the OpenAPI schema)."""
    nestable: ClassVar[bool] = True
    """Whether it may be a sub-grader of a multi grader."""
    judge: ClassVar[bool] = False
    """Whether a model (its ``model`` field) gives the score: score_model, label_model."""
    order: ClassVar[int] = 100
    """Where the type is listed (error messages, the OpenAPI union): OpenAI's types first, then OpenRFT's."""

    @property
    def fields(self) -> dict[str, bool]:
        """Fields accepted besides ``type`` and ``name``; values: required?"""
        return {
            key: info.is_required()
            for key, info in self.schema.model_fields.items()
            if key not in ("type", "name")
        }

    def check(self, out: dict[str, Any], param: str) -> None:
        """Check the values of the type's fields and normalize ``out`` in place (the validator has already
        refused unknown and missing fields); raise GraderValidationError naming the field ``{param}.{key}``."""
        raise NotImplementedError

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        """The engine node grading with a validated spec."""
        raise NotImplementedError

    def openapi_model(self, nested: Any) -> type[GraderFields]:
        """The schema in the OpenAPI document; ``nested`` is the union of the nestable types' models."""
        return self.schema

    def pass_threshold(self, spec: dict[str, Any]) -> float:
        """The score that counts as graded correct when the spec sets no ``pass_threshold``: the maximum."""
        return 1.0

    def templates(self, spec: dict[str, Any]) -> list[str]:
        """The spec's own templates (not its sub-graders'), e.g. to check their ``item.*`` fields."""
        return []

    def reference_hints(self, spec: dict[str, Any]) -> ReferenceHints:
        """By default a ``reference`` template over the item, where the type has one."""
        ref = spec.get("reference")
        return (
            ReferenceHints(templates=(ref,)) if isinstance(ref, str) and "item" in ref else ReferenceHints()
        )

    def children(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        """Sub-graders of a validated spec (multi graders)."""
        return []


_TYPES: dict[str, GraderType] = {}


def register(grader_type: GraderType) -> GraderType:
    if grader_type.name in _TYPES:
        raise ValueError(f"grader type {grader_type.name!r} is already registered")
    _TYPES[grader_type.name] = grader_type
    return grader_type


def unregister(name: str) -> None:
    del _TYPES[name]


def get(name: Any) -> GraderType | None:
    """The registered type named ``name``; None for an unknown name or a non-string (e.g. from raw JSON)."""
    return _TYPES.get(name) if isinstance(name, str) else None


def of(spec: dict[str, Any]) -> GraderType:
    """The type of a validated spec."""
    return _TYPES[spec["type"]]


def names() -> tuple[str, ...]:
    return tuple(_TYPES)


def grader_types() -> tuple[GraderType, ...]:
    return tuple(_TYPES.values())


def build_node(spec: dict[str, Any], settings: GraderSettings) -> Node:
    return of(spec).node(spec, settings)


def judge_models(spec: dict[str, Any], param: str = "grader") -> Iterator[tuple[str, str]]:
    """``(param, model)`` of every judge model in a validated spec, sub-graders included
    (``grader.graders.<key>.model``)."""
    if of(spec).judge:
        yield f"{param}.model", spec["model"]
    graders = spec.get("graders")
    for key, child in graders.items() if isinstance(graders, dict) else ():
        yield from judge_models(child, f"{param}.graders.{key}")


def walk(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A validated spec and every sub-grader below it, depth first."""
    yield spec
    for child in of(spec).children(spec):
        yield from walk(child)
