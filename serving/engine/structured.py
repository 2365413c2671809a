"""Structured output for the CPU engine: ``response_format`` json_schema / json_object by constrained decoding.

llguidance does the constraining: before each sampled token the sequence's matcher says which tokens keep the
output a prefix of a valid answer, the others' logits become -inf, and the sampled token is fed back. It was
chosen over xgrammar and outlines because it is one self-contained wheel with no dependencies (xgrammar
requires triton and its own torch range, outlines pulls a dozen packages and a second engine layer), it
works on any fast Hugging Face tokenizer, whatever the transformers version, and it is the library vLLM uses
for the same ``response_format``, so the CPU engine and a vLLM engine accept the same schemas. Its matcher is
driven token by token, which is how the engine's own scheduler samples, so it needs no transformers
LogitsProcessor and mixes freely with unconstrained rows in one batch.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import torch


class GrammarError(ValueError):
    """The ``response_format`` cannot be compiled (a 400 for the client)."""


def grammar_for(response_format: dict[str, Any] | None) -> str | None:
    """The llguidance grammar of an OpenAI ``response_format`` (None: free text); raises GrammarError."""
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    import llguidance

    # Compact JSON: a small model left free to add whitespace can spend its whole budget on it.
    options: dict[str, Any] = {"whitespace_flexible": False}
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise GrammarError("response_format.json_schema must be an object with a 'schema'.")
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise GrammarError("response_format.json_schema.schema must be a JSON Schema object.")
    else:
        raise GrammarError(
            f"response_format.type {kind!r} is not supported; use 'text', 'json_object' or 'json_schema'."
        )
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise GrammarError(f"Invalid response_format schema: {exc}") from exc
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise GrammarError(f"Invalid response_format schema: {messages[0] if messages else 'unknown error'}")
    return str(grammar)


class Constrainer:
    """One engine's link to llguidance: its tokenizer, built once (about a second) on first use."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _ll_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                import llguidance.hf

                size = max(self.vocab_size, len(self._hf_tokenizer))
                self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=size)
            return self._tokenizer

    def check(self, grammar: str) -> None:
        """Raises GrammarError when ``grammar`` does not compile for this tokenizer."""
        import llguidance

        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            grammar, self._ll_tokenizer()
        )
        if is_error:
            raise GrammarError(f"Invalid response_format schema: {messages[0] if messages else 'unknown'}")

    def matcher(self, grammar: str) -> Any:
        import llguidance

        matcher = llguidance.LLMatcher(self._ll_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"Invalid response_format schema: {matcher.get_error()}")
        return matcher

    def mask(self, matcher: Any, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (1-D) with every token the grammar forbids next set to -inf."""
        bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        allowed = torch.from_numpy(np.unpackbits(bits, bitorder="little").astype(bool))
        width = logits.shape[-1]
        if allowed.shape[0] < width:
            allowed = torch.cat([allowed, torch.zeros(width - allowed.shape[0], dtype=torch.bool)])
        return logits.masked_fill(~allowed[:width], float("-inf"))
