"""A stand-in for ``trainer.graders`` with its batch API, used only while the real engine is absent.

It implements string_check (eq/ne/like/ilike) with ``{{ item.x }}`` / ``{{ sample.output_text }}`` templates,
which is all the trainer tests grade with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from trainer.data import render


@dataclass
class BatchResult:
    scores: list[float]
    sub_scores: list[dict[str, float]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_details: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    token_usage: dict[str, Any] = field(default_factory=dict)


class GraderSettings:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


def validate_grader(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("type") != "string_check":
        raise ValueError(f"fake engine grades string_check only, not {spec.get('type')}")
    if spec.get("operation") not in ("eq", "ne", "like", "ilike"):
        raise ValueError("bad operation")
    return spec


class GraderEngine:
    def __init__(self, spec: dict[str, Any], settings: GraderSettings | None = None) -> None:
        self.spec = validate_grader(spec)
        self.calls = 0

    def __enter__(self) -> GraderEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def grade_batch(self, samples: list[Any], items: list[dict[str, Any]]) -> BatchResult:
        t0 = time.perf_counter()
        self.calls += 1
        scores = []
        for s, item in zip(samples, items, strict=True):
            text = s if isinstance(s, str) else s.output_text
            got = render(self.spec["input"], item=item, output_text=text) or ""
            ref = render(self.spec["reference"], item=item, output_text=text) or ""
            op = self.spec["operation"]
            ok = {
                "eq": got == ref,
                "ne": got != ref,
                "like": ref in got,
                "ilike": ref.lower() in got.lower(),
            }[op]
            scores.append(1.0 if ok else 0.0)
        return BatchResult(scores=scores, timing={"total": time.perf_counter() - t0})
