"""Token ids -> text, one token at a time, with stop strings that never leak into the output.

The detokenizer follows the prefix/read offset scheme of TGI and vLLM: decode a short window of tokens and
emit only the text past what the window already produced, holding back while the window ends in an
incomplete UTF-8 sequence. The stop-string tracker holds back any tail that could still become a stop
string, so a streamed response never shows half of a stop sequence.
"""

from __future__ import annotations

from typing import Any

# Prompt tokens kept as decoding context, so the first generated token gets its leading space right.
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def add(self, token_id: int) -> str:
        """The new text that ``token_id`` completes (may be empty while a character is incomplete)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""


class StopStringTracker:
    """Accumulates text, truncates it at the first stop string, and says what is safe to emit."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._longest = max((len(s) for s in self._stop), default=0)
        self.text = ""
        self._emitted = 0
        self.stopped = False

    def add(self, delta: str) -> str:
        """Append ``delta``; return the text that can be shown now (sets :attr:`stopped` on a stop string)."""
        if self.stopped or not delta:
            return ""
        search_from = max(0, len(self.text) - self._longest + 1)
        self.text += delta
        if self._stop:
            hits = [i for i in (self.text.find(s, search_from) for s in self._stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._take(len(self.text))
        return self._take(len(self.text) - self._held_back())

    def flush(self) -> str:
        """Everything not yet emitted (call when the sequence ends for another reason)."""
        return self._take(len(self.text))

    def _held_back(self) -> int:
        held = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(self.text)), held, -1):
                if self.text.endswith(s[:k]):
                    held = k
                    break
        return held

    def _take(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        out = self.text[self._emitted : upto]
        self._emitted = upto
        return out
