"""The built-in grader types, one module each: a module that defines ``GRADER_TYPE`` is registered, in the
order of the types' ``order`` (the order error messages and the OpenAPI document list them in: OpenAI's types,
then OpenRFT's ``multiple_choice`` and ``endpoint``). Adding a type is adding its module (and its test)."""

from __future__ import annotations

import importlib
import pkgutil

from trainer.graders import registry


def _discover() -> tuple[registry.GraderType, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "GRADER_TYPE", None), registry.GraderType):
            found.append(module.GRADER_TYPE)
    return tuple(sorted(found, key=lambda t: (t.order, t.name)))


BUILTIN: tuple[registry.GraderType, ...] = _discover()
for _grader_type in BUILTIN:
    registry.register(_grader_type)
