"""docs/options.md, generated from the job configuration models (``trainer.config``), so the page cannot
drift from what the service accepts: ``python -m app.options_doc docs/options.md`` (``make openapi`` runs it;
a test checks that the committed page is what this writes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from trainer.config import (
    AugmentationConfig,
    DistributedConfig,
    Endpoint,
    EvalConfig,
    OpenRFTConfig,
    PRMConfig,
    ReinforcementHyperparameters,
    RLConfig,
    SFTConfig,
    SupervisedHyperparameters,
)

INTRO = """\
# Job options

Generated from the service's configuration models by `python -m app.options_doc docs/options.md`
(`make openapi`); do not edit by hand. The OpenAPI schema (`openapi.yaml`, `/docs`) types the same objects.

Every option is optional. `"auto"` means the service chooses from the data, the model and the hardware; the
job's `openrft` field echoes every option with the value it resolved to. OpenRFT options travel in the job
body as the `openrft` object: `extra_body={"openrft": {...}}` with the `openai` SDK, `openrft=` with
`openrft.OpenRFT`, `--openrft JSON` or `-o key.sub=value` with `openrft jobs create`. Unknown keys are
refused with a 400 that names them.
"""

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("openrft", OpenRFTConfig, "Top-level switches of the OpenRFT method."),
    ("openrft.augmentation", AugmentationConfig, ""),
    ("openrft.sft", SFTConfig, "`openrft.synthesis` is accepted as another name for it."),
    ("openrft.rl", RLConfig, ""),
    ("openrft.prm", PRMConfig, ""),
    ("openrft.eval", EvalConfig, ""),
    (
        "openrft.distributed",
        DistributedConfig,
        "The worker refuses a GPU-only strategy when the job starts on a CPU.",
    ),
    ("endpoint object", Endpoint, 'Where an option takes a teacher: `"policy"` or this object.'),
    ("method.reinforcement.hyperparameters", ReinforcementHyperparameters, ""),
    ("method.supervised.hyperparameters", SupervisedHyperparameters, ""),
]


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return "endpoint object" if name == "Endpoint" else f"{name} object"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " or ".join(json.dumps(v) for v in schema["enum"])
    kind = str(schema.get("type", "any"))
    kind = {"integer": "integer", "number": "number", "boolean": "boolean", "string": "string"}.get(
        kind, kind
    )
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        left = "(" if "exclusiveMinimum" in schema else "["
        right = ")" if "exclusiveMaximum" in schema else "]"
        kind += f" {left}{low}, {high}{right}"
    elif low is not None:
        kind += f" {'>' if 'exclusiveMinimum' in schema else '>='} {low}"
    elif high is not None:
        kind += f" {'<' if 'exclusiveMaximum' in schema else '<='} {high}"
    if kind == "string" and "minLength" in schema:
        kind += " (not empty)"
    return kind


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.default_factory is not None:
        return "(object)"
    if field.default is PydanticUndefined:
        return "required"
    return "`" + json.dumps(field.default) + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel]) -> list[str]:
    props = model.model_json_schema()["properties"]
    lines = ["| Option | Type | Default | Meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        schema = props[name]
        if field.default_factory is not None and isinstance(field.default_factory, type):
            continue  # a nested object: it has its own section
        meaning = field.description or ""
        lines.append(
            f"| `{name}` | {_cell(_type(schema))} | {_cell(_default(model, name))} | {_cell(meaning)} |"
        )
    return lines


def options_markdown() -> str:
    parts = [INTRO]
    for title, model, note in SECTIONS:
        parts.append(f"## `{title}`\n" if not title.endswith("object") else f"## The {title}\n")
        doc = (model.__doc__ or "").strip().replace("``", "`")
        text = " ".join(t for t in (doc, note) if t)
        if text:
            parts.append(text + "\n")
        parts.append("\n".join(_table(model)) + "\n")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("docs/options.md")
    out.write_text(options_markdown())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
