"""Small helpers shared by the serving tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.http_thread import ThreadedServer

__all__ = ["Collected", "ThreadedServer", "collect", "greedy"]


@dataclass
class Collected:
    texts: dict[int, str] = field(default_factory=dict)
    tokens: dict[int, list[int]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    deltas: dict[int, list[str]] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def collect(engine: Any, prompt_ids: list[int], params: Any, lora: str | None = None) -> Collected:
    from serving.engine.engine import RequestDone

    out = Collected()
    async for event in engine.generate(prompt_ids, params, lora):
        if isinstance(event, RequestDone):
            out.prompt_tokens, out.completion_tokens = event.prompt_tokens, event.completion_tokens
            continue
        out.texts[event.index] = out.texts.get(event.index, "") + event.text
        out.tokens.setdefault(event.index, []).extend(event.token_ids)
        out.deltas.setdefault(event.index, []).append(event.text)
        if event.finish_reason is not None:
            out.finish[event.index] = event.finish_reason
    return out


def greedy(max_tokens: int, **kwargs: Any) -> Any:
    from serving.engine.sampling import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kwargs)
