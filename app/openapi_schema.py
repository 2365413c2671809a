"""The OpenAPI document, with the objects that requests carry as free JSON typed in it.

Graders, hyperparameters and the ``openrft`` extension object reach the routes as plain dicts: they are
checked by the trainer's own validators, whose errors name the bad field (``param``) and which keep the
object the user sent. Their schemas come from the same models (``trainer.config``) or from models that
mirror the validator (``app.schemas.graders``), and the request schemas point at them by ``$ref``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter

from app.schemas.graders import Grader
from trainer.config import OpenRFTConfig, ReinforcementHyperparameters, SupervisedHyperparameters

REF = "#/components/schemas/{model}"


def ref(name: str, *, nullable: bool = False) -> dict[str, Any]:
    """A JSON Schema pointing at component ``name`` (for ``WithJsonSchema`` on a dict field)."""
    target = {"$ref": REF.format(model=name)}
    # Wrapped: pydantic resolves a bare $ref next to a description against its own definitions.
    return {"anyOf": [target, {"type": "null"}]} if nullable else {"allOf": [target]}


def _components() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def add(name: str, schema: dict[str, Any]) -> None:
        defs = schema.pop("$defs", {})
        for sub, sub_schema in defs.items():
            add(sub, sub_schema)
        if found.get(name, schema) != schema:
            raise RuntimeError(f"two OpenAPI components named {name!r}")
        found[name] = schema

    models: tuple[type[BaseModel], ...] = (
        OpenRFTConfig,
        SupervisedHyperparameters,
        ReinforcementHyperparameters,
    )
    for model in models:
        add(model.__name__, model.model_json_schema(ref_template=REF))
    add("Grader", TypeAdapter(Grader).json_schema(ref_template=REF))
    return found


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` add the typed components and the bearer scheme's use everywhere."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in _components().items():
                if name in schemas and schemas[name] != schema:
                    raise RuntimeError(f"OpenAPI component {name!r} is defined twice")
                schemas[name] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
