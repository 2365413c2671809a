"""``multi``: several named graders graded together, their scores combined by ``calculate_output``.

Sub-graders are any registered type that is nestable (not multi itself); ``graders`` is a named dict on the
wire, and a list of named graders or a single grader (what OpenAI's typed SDKs send) is accepted too.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from pydantic import Field, create_model

from trainer.graders import registry
from trainer.graders.errors import GraderValidationError
from trainer.graders.expression import (
    FUNCTIONS,
    FormulaError,
    FormulaEvalError,
    evaluate,
    names_in,
    parse_formula,
)
from trainer.graders.fields import GraderFields
from trainer.graders.node import Node, Outcome, Runtime, Scope, add_usage
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings

_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


class MultiGrader(GraderFields):
    """Several named graders combined by a formula over their scores."""

    type: Literal["multi"]
    graders: dict[str, Any] = Field(
        description="Graders by name (a list with names is accepted too); not multi graders themselves."
    )
    calculate_output: str = Field(description="e.g. '0.5 * a + 0.5 * b'; +, -, *, /, ^, min, max, abs, ...")


class MultiNode(Node):
    def __init__(self, spec: dict[str, Any], settings: GraderSettings) -> None:
        super().__init__(spec)
        self.children = {key: registry.build_node(sub, settings) for key, sub in spec["graders"].items()}
        self.formula = parse_formula(spec["calculate_output"])

    async def _grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        # Sub-graders are timed under their key in `graders` (what the formula uses; names may repeat).
        child_timings: list[dict[str, float]] = [{} for _ in self.children]
        results = await asyncio.gather(
            *(c.grade(scopes, rt, t) for c, t in zip(self.children.values(), child_timings, strict=True))
        )
        for key, child_timing in zip(self.children, child_timings, strict=True):
            timing[key] = timing.get(key, 0.0) + sum(child_timing.values())
        by_key = dict(zip(self.children, results, strict=True))
        out = []
        for i in range(len(scopes)):
            subs = {key: outcomes[i] for key, outcomes in by_key.items()}
            combined = Outcome()
            for sub in subs.values():
                combined.errors += sub.errors
                for model_name, counts in sub.usage.items():
                    add_usage(combined.usage, model_name, counts)
                combined.sampled_model = combined.sampled_model or sub.sampled_model
            try:
                combined.score = evaluate(self.formula, {k: o.score for k, o in subs.items()})
            except FormulaEvalError as exc:
                combined.errors.append(("formula_parse_error", f"calculate_output: {exc}"))
            combined.sub_scores = {k: o.score for k, o in subs.items()}
            out.append(combined)
        return out


def _named_graders(raw: Any, gp: str) -> list[tuple[str, Any, str]]:
    """``graders`` as it came, as (key, spec, param) triples."""
    if isinstance(raw, dict) and "type" in raw and isinstance(raw.get("type"), str):
        return [(str(raw.get("name", raw["type"])), raw, gp)]  # a single grader (the SDK's typed form)
    if isinstance(raw, dict):
        return [(k, v, f"{gp}.{k}") for k, v in raw.items()]
    if isinstance(raw, list):
        items = []
        for i, g in enumerate(raw):
            if not isinstance(g, dict) or not isinstance(g.get("name"), str):
                raise GraderValidationError(f"{gp}[{i}].name", "graders in a list need a name")
            items.append((g["name"], g, f"{gp}[{i}]"))
        return items
    raise GraderValidationError(gp, "must be an object mapping names to graders")


class Multi(GraderType):
    name = "multi"
    order = 60
    schema = MultiGrader
    nestable = False

    def check(self, out: dict[str, Any], param: str) -> None:
        # Imported here: validation loads the registered types, this module among them.
        from trainer.graders.validation import validate_sub_grader

        gp = f"{param}.graders"
        items = _named_graders(out["graders"], gp)
        if not items:
            raise GraderValidationError(gp, "must contain at least one grader")
        graders: dict[str, dict[str, Any]] = {}
        for key, sub, p in items:
            if not isinstance(key, str) or not _IDENTIFIER.match(key) or key in FUNCTIONS:
                raise GraderValidationError(
                    p,
                    f"grader name {key!r} must be an identifier (letters, digits, _) and not a function name",
                )
            if key in graders:
                raise GraderValidationError(p, f"duplicate grader name {key!r}")
            graders[key] = validate_sub_grader(sub, p, default_name=key)
        out["graders"] = graders
        formula = out["calculate_output"]
        if not isinstance(formula, str):
            raise GraderValidationError(f"{param}.calculate_output", "must be a string")
        try:
            tree = parse_formula(formula)
        except FormulaError as exc:
            raise GraderValidationError(f"{param}.calculate_output", str(exc)) from None
        unknown = sorted(names_in(tree) - set(graders))
        if unknown:
            raise GraderValidationError(
                f"{param}.calculate_output", f"unknown grader names {unknown}; defined: {sorted(graders)}"
            )

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return MultiNode(spec, settings)

    def openapi_model(self, nested: Any) -> type[GraderFields]:
        # `graders` typed by the union of the nestable types, which are only known once all are registered.
        model: type[GraderFields] = create_model(
            "MultiGrader",
            __base__=MultiGrader,
            __doc__=MultiGrader.__doc__,
            graders=(dict[str, nested], MultiGrader.model_fields["graders"]),
        )
        return model

    def children(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        return list(spec["graders"].values())


GRADER_TYPE = Multi()
