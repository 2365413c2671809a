"""Split ``<think>…</think>`` reasoning from the answer, for whole texts and for streamed deltas.

Like vLLM's DeepSeek-R1 parser: reasoning goes to ``reasoning_content``, the rest to ``content``. When the
chat template already opened the block (the prompt ends with ``<think>``), generation starts inside it.
"""

from __future__ import annotations

THINK_START = "<think>"
THINK_END = "</think>"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ReasoningSplitter:
    """Feed text deltas; get ``(reasoning_delta, content_delta)`` back. Call :meth:`finish` at the end."""

    def __init__(self, *, starts_in_reasoning: bool = False) -> None:
        self._state = "reasoning" if starts_in_reasoning else "start"
        self._buffer = ""
        self.saw_reasoning = starts_in_reasoning

    def feed(self, delta: str) -> tuple[str, str]:
        self._buffer += delta
        reasoning, content = "", ""
        while True:
            if self._state == "start":
                head = self._buffer.lstrip()
                if head.startswith(THINK_START):
                    self._buffer = head[len(THINK_START) :]
                    self._state = "reasoning"
                    self.saw_reasoning = True
                    continue
                if THINK_START.startswith(head):  # still ambiguous (empty or a partial tag)
                    return reasoning, content
                self._state = "content"
                continue
            if self._state == "reasoning":
                end = self._buffer.find(THINK_END)
                if end >= 0:
                    reasoning += self._buffer[:end]
                    self._buffer = self._buffer[end + len(THINK_END) :]
                    self._state = "answer_start"
                    continue
                keep = _partial_suffix(self._buffer, THINK_END)
                reasoning += self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return reasoning, content
            if self._state == "answer_start":
                # The blank line models put after </think> is layout, not answer.
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    return reasoning, content
                self._state = "content"
                continue
            content += self._buffer
            self._buffer = ""
            return reasoning, content

    def finish(self) -> tuple[str, str]:
        rest, self._buffer = self._buffer, ""
        if self._state == "reasoning":
            return rest, ""
        if self._state == "answer_start":
            return "", ""
        return "", rest


def split_reasoning(text: str, *, starts_in_reasoning: bool = False) -> tuple[str | None, str]:
    """``(reasoning_content or None, content)`` of a whole completion."""
    splitter = ReasoningSplitter(starts_in_reasoning=starts_in_reasoning)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    return (r1 + r2 if splitter.saw_reasoning else None), c1 + c2
