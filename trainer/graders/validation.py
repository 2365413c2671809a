"""``validate_grader``: check a grader spec field by field and return its normalized form.

Errors name the bad field as a dotted path (``grader.graders.b.operation``) so the API can answer 400 with
``param`` set. Normalization: ``neq`` -> ``ne``; multi graders' ``graders`` as a named dict (a list or a
single grader is accepted); defaults filled in (``name``, score_model ``range``, multiple_choice templates).
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any
from urllib.parse import urlsplit

from trainer.graders.errors import GraderValidationError
from trainer.graders.expression import FUNCTIONS, FormulaError, names_in, parse_formula
from trainer.graders.templates import check_template

MAX_PYTHON_SOURCE_BYTES = 256 * 1024
STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
SAMPLING_PARAMS = {
    "seed": int,
    "top_p": float,
    "temperature": float,
    "max_completions_tokens": int,
    "reasoning_effort": str,
}
DEFAULT_CHOICE_LABELS = list("ABCDEFGHIJ")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")

# Fields each type accepts besides `type` and `name`; values: required?
_FIELDS: dict[str, dict[str, bool]] = {
    "string_check": {"input": True, "reference": True, "operation": True, "pass_threshold": False},
    "text_similarity": {"input": True, "reference": True, "evaluation_metric": True, "pass_threshold": False},
    "score_model": {
        "model": True,
        "input": True,
        "range": False,
        "sampling_params": False,
        "pass_threshold": False,
    },
    "label_model": {
        "model": True,
        "input": True,
        "labels": True,
        "passing_labels": True,
        "pass_threshold": False,
    },
    "python": {"source": True, "image_tag": False, "pass_threshold": False},
    "multi": {"graders": True, "calculate_output": True, "pass_threshold": False},
    "multiple_choice": {"input": False, "reference": False, "labels": False, "pass_threshold": False},
    "endpoint": {"url": True, "headers": False, "timeout_s": False, "pass_threshold": False},
}
GRADER_TYPES = tuple(_FIELDS)


def validate_grader(spec: Any) -> dict[str, Any]:
    """Validate any grader (including multi) and return its normalized spec; raises GraderValidationError."""
    return _validate(spec, "grader", default_name=None, nested=False)


def _validate(spec: Any, param: str, *, default_name: str | None, nested: bool) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise GraderValidationError(param, "must be an object")
    gtype = spec.get("type")
    if not isinstance(gtype, str) or gtype not in _FIELDS:  # a dict or list type is not hashable
        raise GraderValidationError(
            f"{param}.type", f"must be one of {', '.join(GRADER_TYPES)}; got {gtype!r}"
        )
    fields = _FIELDS[gtype]
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
        _number(spec["pass_threshold"], f"{param}.pass_threshold")
    if gtype == "multi" and nested:
        raise GraderValidationError(f"{param}.type", "multi graders cannot be nested")
    _CHECKS[gtype](out, param)
    return out


def _number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GraderValidationError(param, "must be a finite number")
    return float(value)


def _string_list(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise GraderValidationError(param, "must be a non-empty list of non-empty strings")
    if len(set(value)) != len(value):
        raise GraderValidationError(param, "must not contain duplicates")
    return list(value)


def _string_check(out: dict[str, Any], param: str) -> None:
    check_template(out["input"], f"{param}.input")
    check_template(out["reference"], f"{param}.reference")
    op = out["operation"]
    if op == "neq":
        out["operation"] = "ne"
    elif op not in STRING_OPERATIONS:
        raise GraderValidationError(f"{param}.operation", f"must be one of eq, ne, like, ilike; got {op!r}")


def _text_similarity(out: dict[str, Any], param: str) -> None:
    check_template(out["input"], f"{param}.input")
    check_template(out["reference"], f"{param}.reference")
    metric = out["evaluation_metric"]
    if metric not in SIMILARITY_METRICS:
        raise GraderValidationError(
            f"{param}.evaluation_metric", f"must be one of {', '.join(SIMILARITY_METRICS)}; got {metric!r}"
        )


def _messages(value: Any, param: str) -> None:
    if not isinstance(value, list) or not value:
        raise GraderValidationError(param, "must be a non-empty list of messages")
    for i, msg in enumerate(value):
        p = f"{param}[{i}]"
        if not isinstance(msg, dict):
            raise GraderValidationError(p, "must be an object with role and content")
        for key in msg:
            if key not in ("role", "content", "type"):
                raise GraderValidationError(f"{p}.{key}", "unknown field for a message")
        if msg.get("role") not in MESSAGE_ROLES:
            raise GraderValidationError(f"{p}.role", f"must be one of {', '.join(MESSAGE_ROLES)}")
        if msg.get("type", "message") != "message":
            raise GraderValidationError(f"{p}.type", "must be 'message'")
        if "content" not in msg:
            raise GraderValidationError(f"{p}.content", "is required")
        content = msg["content"]
        parts = content if isinstance(content, list) else [content]
        for j, part in enumerate(parts):
            _content_part(part, f"{p}.content[{j}]" if isinstance(content, list) else f"{p}.content")


def _content_part(part: Any, param: str) -> None:
    if isinstance(part, str):
        check_template(part, param)
        return
    if not isinstance(part, dict):
        raise GraderValidationError(param, "must be a string or a content object")
    ptype = part.get("type")
    if ptype in ("input_text", "output_text"):
        check_template(part.get("text"), f"{param}.text")
    elif ptype == "input_image":
        check_template(part.get("image_url"), f"{param}.image_url")
    elif ptype == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise GraderValidationError(f"{param}.input_audio", "must be an object with data and format")
    else:
        raise GraderValidationError(
            f"{param}.type", "must be one of input_text, output_text, input_image, input_audio"
        )


def _sampling_params(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise GraderValidationError(param, "must be an object")
    for key, val in value.items():
        want = SAMPLING_PARAMS.get(key)
        if want is None:
            raise GraderValidationError(f"{param}.{key}", f"unknown; allowed: {', '.join(SAMPLING_PARAMS)}")
        if val is None:
            continue
        if want is float:
            _number(val, f"{param}.{key}")
        elif want is int and (isinstance(val, bool) or not isinstance(val, int)):
            raise GraderValidationError(f"{param}.{key}", "must be an integer")
        elif want is str and not isinstance(val, str):
            raise GraderValidationError(f"{param}.{key}", "must be a string")
    max_tokens = value.get("max_completions_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise GraderValidationError(f"{param}.max_completions_tokens", "must be at least 1")


def _model_common(out: dict[str, Any], param: str) -> None:
    if not isinstance(out["model"], str) or not out["model"]:
        raise GraderValidationError(f"{param}.model", "must be a non-empty string")
    _messages(out["input"], f"{param}.input")


def _score_model(out: dict[str, Any], param: str) -> None:
    _model_common(out, param)
    rng = out.get("range")
    if rng is None:
        out["range"] = [0.0, 1.0]
    else:
        if not isinstance(rng, list) or len(rng) != 2:
            raise GraderValidationError(f"{param}.range", "must be two numbers [min, max]")
        lo, hi = _number(rng[0], f"{param}.range[0]"), _number(rng[1], f"{param}.range[1]")
        if lo >= hi:
            raise GraderValidationError(f"{param}.range", "min must be less than max")
        out["range"] = [lo, hi]
    if out.get("sampling_params") is not None:
        _sampling_params(out["sampling_params"], f"{param}.sampling_params")


def _label_model(out: dict[str, Any], param: str) -> None:
    _model_common(out, param)
    labels = _string_list(out["labels"], f"{param}.labels")
    passing = _string_list(out["passing_labels"], f"{param}.passing_labels")
    unknown = [p for p in passing if p not in labels]
    if unknown:
        raise GraderValidationError(f"{param}.passing_labels", f"{unknown} are not among labels")


def _python(out: dict[str, Any], param: str) -> None:
    source = out["source"]
    if not isinstance(source, str):
        raise GraderValidationError(f"{param}.source", "must be a string")
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_PYTHON_SOURCE_BYTES:
        raise GraderValidationError(f"{param}.source", f"is {size} bytes; the limit is 256 kB")
    try:
        # Parsing never executes anything; pathological nesting raises RecursionError/MemoryError.
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise GraderValidationError(
            f"{param}.source", f"syntax error at line {exc.lineno}: {exc.msg}"
        ) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise GraderValidationError(f"{param}.source", f"cannot be parsed: {type(exc).__name__}") from None
    if "grade" not in _top_level_names(tree):
        raise GraderValidationError(f"{param}.source", "must define a function grade(sample, item)")
    if out.get("image_tag") is not None and not isinstance(out["image_tag"], str):
        raise GraderValidationError(f"{param}.image_tag", "must be a string")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):
            # `try: from x import grade` and similar: accept names bound in either branch.
            inner = ast.Module(body=[*node.body, *node.orelse], type_ignores=[])
            names |= _top_level_names(inner)
    return names


def _multi(out: dict[str, Any], param: str) -> None:
    raw = out["graders"]
    gp = f"{param}.graders"
    items: list[tuple[str, Any, str]]  # (key, spec, param)
    if isinstance(raw, dict) and "type" in raw and isinstance(raw.get("type"), str):
        items = [(str(raw.get("name", raw["type"])), raw, gp)]  # a single grader (the SDK's typed form)
    elif isinstance(raw, dict):
        items = [(k, v, f"{gp}.{k}") for k, v in raw.items()]
    elif isinstance(raw, list):
        items = []
        for i, g in enumerate(raw):
            if not isinstance(g, dict) or not isinstance(g.get("name"), str):
                raise GraderValidationError(f"{gp}[{i}].name", "graders in a list need a name")
            items.append((g["name"], g, f"{gp}[{i}]"))
    else:
        raise GraderValidationError(gp, "must be an object mapping names to graders")
    if not items:
        raise GraderValidationError(gp, "must contain at least one grader")
    graders: dict[str, dict[str, Any]] = {}
    for key, sub, p in items:
        if not isinstance(key, str) or not _IDENTIFIER.match(key) or key in FUNCTIONS:
            raise GraderValidationError(
                p, f"grader name {key!r} must be an identifier (letters, digits, _) and not a function name"
            )
        if key in graders:
            raise GraderValidationError(p, f"duplicate grader name {key!r}")
        graders[key] = _validate(sub, p, default_name=key, nested=True)
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


def _multiple_choice(out: dict[str, Any], param: str) -> None:
    out.setdefault("input", "{{ sample.output_text }}")
    out.setdefault("reference", "{{ item.answer }}")
    check_template(out["input"], f"{param}.input")
    check_template(out["reference"], f"{param}.reference")
    labels = _string_list(out.get("labels", DEFAULT_CHOICE_LABELS), f"{param}.labels")
    if not all(re.fullmatch(r"[A-Za-z0-9]", lab) for lab in labels):
        raise GraderValidationError(f"{param}.labels", "labels must be single letters or digits")
    out["labels"] = labels


def _endpoint(out: dict[str, Any], param: str) -> None:
    url = out["url"]
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise GraderValidationError(f"{param}.url", "must be an http(s) URL")
    headers = out.get("headers")
    if headers is not None and (
        not isinstance(headers, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise GraderValidationError(f"{param}.headers", "must map header names to string values")
    if "timeout_s" in out and _number(out["timeout_s"], f"{param}.timeout_s") <= 0:
        raise GraderValidationError(f"{param}.timeout_s", "must be positive")


_CHECKS = {
    "string_check": _string_check,
    "text_similarity": _text_similarity,
    "score_model": _score_model,
    "label_model": _label_model,
    "python": _python,
    "multi": _multi,
    "multiple_choice": _multiple_choice,
    "endpoint": _endpoint,
}
