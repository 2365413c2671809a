"""Incremental detokenization, stop strings, reasoning split, sampling: the pure parts of the engine."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.engine.reasoning import ReasoningSplitter, split_reasoning
from serving.engine.sampling import SamplingParams, apply_penalties, sample_token
from serving.engine.text import IncrementalDetokenizer, StopStringTracker


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_detokenizer_reassembles_text_including_multibyte(tokenizer: Any) -> None:
    prompt = tokenizer("Question:")["input_ids"]
    text = " The café — naïve 12 + 7 = 19 ✓ done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [detok.add(i) for i in ids]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)  # incomplete UTF-8 is held back, never shown


def test_stop_tracker_holds_back_partial_stops() -> None:
    tracker = StopStringTracker(("STOP",))
    shown = [tracker.add(d) for d in ["abc S", "T", "x", " yy ST", "OP tail"]]
    assert shown == ["abc ", "", "STx", " yy ", ""]
    assert tracker.stopped and tracker.text == "abc STx yy "


def test_stop_tracker_flush_and_earliest_stop() -> None:
    tracker = StopStringTracker(("zz", "b"))
    assert tracker.add("aaz") == "aa"
    assert tracker.flush() == "z"
    tracker = StopStringTracker(("cd", "bcd"))
    assert tracker.add("abcdef") == "a"  # the stop that starts first wins
    assert tracker.stopped


@pytest.mark.parametrize(
    ("text", "starts_in", "reasoning", "content"),
    [
        ("<think>step 1\nstep 2</think>\n\nThe answer is 4.", False, "step 1\nstep 2", "The answer is 4."),
        ("  <think>r</think>a", False, "r", "a"),
        ("plain answer <think>not at start</think>", False, None, "plain answer <think>not at start</think>"),
        ("reasoning here</think>answer", True, "reasoning here", "answer"),
        ("<think>cut off by max_tokens", False, "cut off by max_tokens", ""),
        ("<thin", False, None, "<thin"),
        ("", False, None, ""),
    ],
)
def test_split_reasoning(text: str, starts_in: bool, reasoning: str | None, content: str) -> None:
    assert split_reasoning(text, starts_in_reasoning=starts_in) == (reasoning, content)


@pytest.mark.parametrize("seed", range(20))
def test_streamed_reasoning_split_equals_whole_split(seed: int) -> None:
    rng = random.Random(seed)
    text = rng.choice(["", " ", "\n"]) + "<think>a < b, so </thin no</think>\n\n<think>answer</think> ok"
    cuts = sorted(rng.sample(range(1, len(text)), 8))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    splitter = ReasoningSplitter()
    reasoning = content = ""
    for piece in pieces:
        r, c = splitter.feed(piece)
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    assert (reasoning + r, content + c) == split_reasoning(text)
    assert reasoning + r == "a < b, so </thin no"


def test_greedy_top_k_top_p_and_seeds() -> None:
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5])
    assert sample_token(logits, SamplingParams(max_tokens=1, temperature=0.0), None) == 1
    top1 = SamplingParams(max_tokens=1, temperature=1.0, top_k=1)
    assert {sample_token(logits, top1, torch.Generator().manual_seed(s)) for s in range(20)} == {1}
    # top_p=0.6: token 1 (p~0.63) alone reaches the mass.
    nucleus = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.6)
    assert {sample_token(logits, nucleus, torch.Generator().manual_seed(s)) for s in range(20)} == {1}
    wide = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.85)  # 0.63 + 0.23 reaches it
    assert {sample_token(logits, wide, torch.Generator().manual_seed(s)) for s in range(60)} == {1, 2}
    free = SamplingParams(max_tokens=1, temperature=2.0)
    draws = [sample_token(logits, free, torch.Generator().manual_seed(s)) for s in range(10)]
    assert draws == [sample_token(logits, free, torch.Generator().manual_seed(s)) for s in range(10)]


def test_penalties_and_param_checks() -> None:
    logits = torch.zeros(4)
    out = apply_penalties(logits, [2, 2, 3], presence=0.5, frequency=1.0)
    assert out.tolist() == [0.0, 0.0, -2.5, -1.5]
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(max_tokens=1, top_p=0.0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
