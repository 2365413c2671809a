"""The grader objects as JSON Schema, for the OpenAPI document.

Requests are checked by ``trainer.graders.validate_grader`` (it names the bad field in ``param`` and
normalizes the spec); the models only describe what it accepts, OpenAI's types plus OpenRFT's
``multiple_choice`` and ``endpoint``. Each type's model comes from its module in the grader registry
(``trainer.graders.types``), where the validator reads the type's fields from too; a test validates
examples of every type against both.
"""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Annotated, Any

from pydantic import BaseModel, Field

from trainer.graders import registry


def _union(models: list[type[BaseModel]]) -> Any:
    return Annotated[reduce(or_, models), Field(discriminator="type")]


_nestable = [t for t in registry.grader_types() if t.nestable]
_outer = [t for t in registry.grader_types() if not t.nestable]
InnerGrader = _union([t.schema for t in _nestable])
"""Any grader that may be a sub-grader of a multi grader."""
GRADER_MODELS: tuple[type[BaseModel], ...] = tuple(t.openapi_model(InnerGrader) for t in _nestable + _outer)
Grader = _union(list(GRADER_MODELS))
