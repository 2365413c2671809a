"""The body of ``POST /fine_tuning/jobs`` from the keyword arguments of ``jobs.create``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openrft._exceptions import OpenRFTError


def job_body(
    *,
    model: str,
    training_file: str,
    validation_file: str | None,
    suffix: str | None,
    seed: int | None,
    metadata: Mapping[str, str] | None,
    integrations: Any,
    method: Mapping[str, Any] | None,
    grader: Mapping[str, Any] | None,
    hyperparameters: Mapping[str, Any] | None,
    openrft: Mapping[str, Any] | None,
    openrft_keywords: Mapping[str, Any],
) -> dict[str, Any]:
    """``grader`` is a shortcut for a reinforcement ``method``; ``hyperparameters`` then go inside it (OpenAI
    deprecated the top-level field; it is sent top-level only for a plain supervised job). The typed OpenRFT
    keywords are merged over ``openrft`` (a nested section merges key by key)."""
    body: dict[str, Any] = {"model": model, "training_file": training_file}
    for key, value in (
        ("validation_file", validation_file),
        ("suffix", suffix),
        ("seed", seed),
        ("metadata", dict(metadata) if metadata is not None else None),
        ("integrations", integrations),
    ):
        if value is not None:
            body[key] = value
    if method is not None and grader is not None:
        raise OpenRFTError("Pass either method=... or the grader=... shortcut, not both.")
    if grader is not None:
        method = {"type": "reinforcement", "reinforcement": {"grader": dict(grader)}}
    if method is not None:
        resolved = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in method.items()}
        mtype = resolved.get("type")
        if not isinstance(mtype, str):
            raise OpenRFTError("method needs a 'type': 'reinforcement' or 'supervised'.")
        if hyperparameters is not None:
            inner = resolved.setdefault(mtype, {})
            if inner.get("hyperparameters"):
                raise OpenRFTError(f"hyperparameters given twice: as an argument and in method.{mtype}.")
            inner["hyperparameters"] = dict(hyperparameters)
        body["method"] = resolved
    elif hyperparameters is not None:
        body["hyperparameters"] = dict(hyperparameters)
    options = merge_options(dict(openrft or {}), {k: v for k, v in openrft_keywords.items() if v is not None})
    if options:
        body["openrft"] = options
    return body


def merge_options(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, nested objects merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_options(dict(out[key]), value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out
