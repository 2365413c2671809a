"""Before/after accuracy: ask a model the held-out questions through chat completions, then score every
reply with the job's own grader (``graders.run``), so "correct" means exactly what the reward meant."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from openrft import OpenRFT
from openrft._model_loading import retry_while_loading

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam


@dataclass(frozen=True)
class Graded:
    reply: str
    reward: float
    parsed: bool
    """False when the grader found no answer in the reply (``sample_parse_error``)."""


@dataclass(frozen=True)
class Score:
    model: str
    graded: list[Graded]
    seconds: float

    @property
    def correct(self) -> int:
        return sum(1 for g in self.graded if g.reward >= 1.0)

    @property
    def answered(self) -> int:
        return sum(1 for g in self.graded if g.parsed)

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.graded) if self.graded else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy (scipy comes with the service's install, which the demo runs)."""
        if not self.graded:
            return (0.0, 1.0)
        from scipy.stats import binomtest

        ci = binomtest(self.correct, len(self.graded)).proportion_ci(method="wilson")
        return (float(ci.low), float(ci.high))


def prompt(row: dict[str, Any], system_prompt: str | None) -> list[ChatCompletionMessageParam]:
    """The same conversation training used: the job's system prompt, then the row's messages (in the
    shape the file validation checked)."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return cast("list[ChatCompletionMessageParam]", head + [dict(m) for m in row["messages"]])


def ask(
    client: OpenRFT,
    model: str,
    rows: Sequence[dict[str, Any]],
    *,
    system_prompt: str | None,
    max_tokens: int,
    concurrency: int = 8,
    on_reply: Callable[[], None] | None = None,
) -> list[str]:
    """Greedy replies to every row; concurrent requests so the engine can batch them."""

    def one(row: dict[str, Any]) -> str:
        done = retry_while_loading(  # the first requests may find the model's engine or adapter still loading
            lambda: client.chat.completions.create(
                model=model, messages=prompt(row, system_prompt), max_tokens=max_tokens, temperature=0.0
            )
        )
        if on_reply is not None:
            on_reply()
        return done.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, rows))


def grade(
    client: OpenRFT, grader: dict[str, Any], rows: Sequence[dict[str, Any]], replies: Sequence[str]
) -> list[Graded]:
    graded = []
    for row, reply in zip(rows, replies, strict=True):
        item = {k: v for k, v in row.items() if k != "messages"}
        result = client.graders.run(grader=cast(Any, grader), model_sample=reply, item=item)
        parsed = not result.metadata.errors.sample_parse_error
        graded.append(Graded(reply=reply, reward=result.reward, parsed=parsed))
    return graded
