"""``text_similarity``: a similarity score in [0, 1] between the rendered input and reference.

The metric libraries (rapidfuzz, NLTK, sacrebleu, rouge-score, sentence-transformers) load on first use,
in a worker thread so the engine's loop keeps serving I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

from trainer.graders.errors import GradingError
from trainer.graders.fields import GraderFields, TemplateText, check_templates, one_of
from trainer.graders.node import Node, Outcome, PairNode, Runtime
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings

Metric = Literal[
    "cosine", "fuzzy_match", "bleu", "gleu", "meteor",
    "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
]  # fmt: skip
SIMILARITY_METRICS: tuple[str, ...] = get_args(Metric)


class TextSimilarityGrader(GraderFields):
    """A similarity score in [0, 1] between the rendered input and reference."""

    type: Literal["text_similarity"]
    input: TemplateText
    reference: TemplateText
    evaluation_metric: Metric


class TextSimilarityNode(PairNode):
    def __init__(self, spec: dict[str, Any], settings: GraderSettings) -> None:
        super().__init__(spec)
        self.metric = spec["evaluation_metric"]
        self.settings = settings

    def _metric(self) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
        from trainer.graders import similarity

        wordnet = None
        if self.metric == "meteor":
            from trainer.graders.wordnet import NoSynonyms, WordNetUnavailable, load_wordnet

            try:
                wordnet = load_wordnet(self.settings.wordnet_dir)
            except WordNetUnavailable as exc:
                if not self.settings.meteor_without_wordnet:
                    raise GradingError("other_error", str(exc)) from None
                wordnet = NoSynonyms()
        return similarity.metric_function(
            self.metric, cosine_model_path=self.settings.cosine_model_path, wordnet=wordnet
        )

    def _score_all(self, inputs: list[str], refs: list[str]) -> list[float]:
        return list(self._metric()(inputs, refs))

    async def score_pairs(self, pairs: list[tuple[str, str]], rt: Runtime) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(
                rt.cpu_pool, self._score_all, [text for text, _ in pairs], [ref for _, ref in pairs]
            )
        except GradingError as exc:
            return [Outcome.failed(exc) for _ in pairs]
        except Exception as exc:  # a library failure must not fail the batch
            failure = GradingError("other_error", f"{self.metric}: {type(exc).__name__}: {exc}")
            return [Outcome.failed(failure) for _ in pairs]
        return [Outcome(score) for score in scores]


class TextSimilarity(GraderType):
    name = "text_similarity"
    order = 20
    schema = TextSimilarityGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        check_templates(out, param)
        one_of(out["evaluation_metric"], SIMILARITY_METRICS, f"{param}.evaluation_metric")

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return TextSimilarityNode(spec, settings)

    def templates(self, spec: dict[str, Any]) -> list[str]:
        return [spec["input"], spec["reference"]]


GRADER_TYPE = TextSimilarity()
