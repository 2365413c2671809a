"""Offline WordNet for METEOR's synonym stage.

NLTK normally downloads its ``wordnet`` corpus from the internet; this service never does. We read, in
order: an already installed NLTK ``corpora/wordnet`` (if someone provisioned one), else the Princeton
WordNet 3.0 database shipped by the Debian package ``wordnet-base`` (installed by scripts/setup.sh). That is
the same WordNet 3.0 data NLTK's corpus contains; Debian's copy lacks only the tiny ``lexnames`` table (the
45 lexicographer file names fixed by the WordNet 3.0 format, see lexnames(5WN)), which we supply.
"""

from __future__ import annotations

import io
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

DEBIAN_WORDNET_DIR = "/usr/share/wordnet"  # Debian/Ubuntu package `wordnet-base`

# fmt: off
_LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
]
# fmt: on
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
LEXNAMES_TEXT = "".join(
    f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)
)

_lock = threading.Lock()
_readers: dict[str, Any] = {}


class WordNetUnavailable(RuntimeError):
    """No WordNet database could be found locally."""


def find_wordnet_dir(configured: str | None = None) -> str | None:
    """The directory to read WordNet from, or None."""
    if configured:
        return configured if (Path(configured) / "data.noun").is_file() else None
    try:
        import nltk.data

        found = nltk.data.find("corpora/wordnet")
        return str(found.path) if hasattr(found, "path") else str(found)
    except (LookupError, ImportError, OSError, ValueError):
        pass
    return DEBIAN_WORDNET_DIR if (Path(DEBIAN_WORDNET_DIR) / "data.noun").is_file() else None


def load_wordnet(configured: str | None = None) -> Any:
    """A cached ``WordNetCorpusReader`` (about 1.5 s to load once); raises WordNetUnavailable."""
    root = find_wordnet_dir(configured)
    if root is None:
        raise WordNetUnavailable(
            "WordNet data not found: install the Debian package `wordnet-base` (scripts/setup.sh does), "
            "or set GraderSettings.wordnet_dir to a WordNet 3.0 `dict` directory"
        )
    with _lock:
        if root not in _readers:
            _readers[root] = _make_reader(root)
        return _readers[root]


def _make_reader(root: str) -> Any:
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _LocalWordNet(WordNetCorpusReader):
        def open(self, file: str) -> Any:
            if file == "lexnames" and not (Path(root) / "lexnames").is_file():
                return io.StringIO(LEXNAMES_TEXT)
            return super().open(file)

        def map_wn(self, version: str = "wordnet") -> Any:
            # Only the multilingual (OMW) functions use this mapping; it would look up NLTK's corpus.
            return None

    # NLTK only opens corpora under its data path: authorize this directory explicitly.
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": we use none
        return CachedSynsets(_LocalWordNet(root, None))


class CachedSynsets:
    """A WordNet reader whose ``synsets(word)`` is memoized: METEOR looks up every word of every sample,
    and NLTK redoes the morphological analysis each time (a third of METEOR's time on RL batches)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self._synsets = lru_cache(maxsize=200_000)(self._lookup)

    def _lookup(self, lemma: str, pos: str | None) -> tuple[Any, ...]:
        return tuple(self.reader.synsets(lemma, pos))

    def synsets(self, lemma: str, pos: str | None = None) -> list[Any]:
        return list(self._synsets(lemma, pos))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


class NoSynonyms:
    """Stands in for WordNet when explicitly allowed: METEOR then matches exact words and stems only."""

    def synsets(self, *_: Any, **__: Any) -> list[Any]:
        return []
