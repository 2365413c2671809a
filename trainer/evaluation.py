"""Evaluation on the validation rows: generate with the eval protocol, grade, average."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.generation import GenerationStats, Messages, generate

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from trainer.control import Stopper
    from trainer.grading import Grader


@dataclass
class EvalResult:
    mean_reward: float
    accuracy: float
    n_questions: int
    n_samples: int
    seconds: float
    completion_tokens_mean: float
    grader_errors: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    per_question: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    """Every sample's grade, question by question (``samples`` consecutive grades per question)."""


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    items: list[dict[str, Any]],
    grader: Grader,
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    stopper: Stopper | None = None,
    batch_size: int = 16,
    padding: Sequence[Messages] = (),
    synced_gpus: bool = False,
) -> EvalResult:
    """Mean grade over ``samples`` completions per prompt (greedy: one is enough, so ``samples`` collapses to 1).

    ``padding``: prompts generated after ``prompts`` and then dropped, ungraded, so that ranks with sharded
    weights make as many generation calls (``synced_gpus``, see :func:`trainer.generation.generate`)."""
    t0 = time.perf_counter()
    if temperature <= 0:
        samples = 1
    stats = GenerationStats()
    outs = generate(
        model,
        tokenizer,
        [*prompts, *padding],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        num_samples=samples,
        batch_size=batch_size,
        stopper=stopper,
        stats=stats,
        synced_gpus=synced_gpus,
        counted=len(prompts),
    )[: len(prompts)]
    flat = [c for cs in outs for c in cs]
    flat_items = [it for it, cs in zip(items, outs, strict=True) for _ in cs]
    grades = grader.grade(flat, flat_items)
    scores = grades.scores
    per_q = [sum(scores[i * samples : (i + 1) * samples]) / samples for i in range(len(prompts))]
    n = len(scores)
    return EvalResult(
        mean_reward=sum(scores) / n if n else 0.0,
        accuracy=sum(grader.correct(s) for s in scores) / n if n else 0.0,
        n_questions=len(prompts),
        n_samples=n,
        seconds=time.perf_counter() - t0,
        completion_tokens_mean=stats.completion_tokens / n if n else 0.0,
        grader_errors=grades.errors,
        examples=[{"completion": c, "score": s} for c, s in list(zip(flat, scores, strict=True))[:3]],
        per_question=per_q,
        scores=scores,
    )


def combine(parts: list[EvalResult]) -> EvalResult:
    """One result from the results of disjoint shards of the rows (one per rank of a multi-process run), as if
    one process had evaluated them all: means weighted by samples, counts added, shards concatenated in order."""
    n = sum(p.n_samples for p in parts)
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p.grader_errors.items():
            errors[k] = errors.get(k, 0) + v

    def mean(attr: str) -> float:
        return sum(getattr(p, attr) * p.n_samples for p in parts) / n if n else 0.0

    return EvalResult(
        mean_reward=mean("mean_reward"),
        accuracy=mean("accuracy"),
        n_questions=sum(p.n_questions for p in parts),
        n_samples=n,
        seconds=max((p.seconds for p in parts), default=0.0),
        completion_tokens_mean=mean("completion_tokens_mean"),
        grader_errors=errors,
        examples=[e for p in parts for e in p.examples][:3],
        per_question=[q for p in parts for q in p.per_question],
        scores=[s for p in parts for s in p.scores],
    )
