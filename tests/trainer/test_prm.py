"""Process rewards: step splitting, aggregation, the three scorers, and the alpha-weighted RL reward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from trainer.config import PRMConfig
from trainer.grading import Grader
from trainer.prm import EndpointJudge, HFProcessRewardModel, SelfVerifier, aggregate, split_steps
from trainer.rl import GraderReward, StatsBox

PROMPTS = [[{"role": "user", "content": "What is 2 + 2?"}]] * 2
COMPLETIONS = ["2 + 2 = 4.\n\nSo the answer is 4.", "Let me guess.\n\nMaybe 5.\n\nAnswer: 5"]


def test_split_and_aggregate() -> None:
    assert split_steps("a\n\n\n\nb\n\nc", max_steps=8) == ["a", "b", "c"]
    assert split_steps("a\n\nb\n\nc\n\nd", max_steps=2) == ["a", "b\n\nc\n\nd"]
    assert split_steps("   ") == []
    assert aggregate([0.2, 0.8], "mean") == pytest.approx(0.5)
    assert aggregate([0.2, 0.8], "min") == 0.2 and aggregate([0.2, 0.8], "last") == 0.8
    assert aggregate([], "mean") == 0.0


def test_self_verifier_scores_steps_with_the_frozen_base(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.lora import attach_adapter

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model), rank=4, alpha=8, dropout=0.0)
    prm = SelfVerifier(model, tok, PRMConfig(type="self"))
    assert prm.yes and prm.no and not set(prm.yes) & set(prm.no)
    before = prm.score(PROMPTS, COMPLETIONS)
    assert all(0.0 <= s <= 1.0 for s in before) and len(before) == 2
    # Training moves the LoRA weights; the verifier runs with the adapter off, so its judgement is fixed.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    model.train()
    assert prm.score(PROMPTS, COMPLETIONS) == pytest.approx(before)
    assert model.training  # the verifier restores the training mode it found


def test_hf_prm_classification_head(tmp_path: Path, tiny_model: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = LlamaConfig.from_pretrained(tiny_model)
    cfg.num_labels = 2
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "prm")
    tok.save_pretrained(tmp_path / "prm")
    prm = HFProcessRewardModel(str(tmp_path / "prm"), PRMConfig(type="hf", path=str(tmp_path / "prm")))
    scores = prm.score(PROMPTS, COMPLETIONS)
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)
    assert prm.score(PROMPTS, COMPLETIONS) == pytest.approx(scores)


def test_endpoint_judge_parses_step_scores() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        n = body["messages"][0]["content"].count("Step ") - 1  # the instruction mentions "Step k" once
        reply = "\n".join(f"Step {k + 1}: {1.0 if k == 0 else 0.5}" for k in range(n))
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": reply}}]})

    cfg = PRMConfig(type="endpoint", base_url="http://judge/v1", model="judge", aggregate="mean")
    judge = EndpointJudge(cfg, transport=httpx.MockTransport(handler))
    scores = judge.score(PROMPTS, COMPLETIONS)
    assert scores == pytest.approx([0.75, (1.0 + 0.5 + 0.5) / 3])
    assert all(b["model"] == "judge" for b in seen) and judge.errors == 0

    waits: list[float] = []
    bad = EndpointJudge(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(500)), sleep=waits.append)
    assert bad.score(PROMPTS[:1], COMPLETIONS[:1]) == [0.0] and bad.errors == 1
    assert waits == [0.5, 1.0] and "HTTP 500" in (bad.last_error or "")  # retried, then counted
    prose = httpx.MockTransport(
        lambda r: httpx.Response(200, json={"choices": [{"message": {"content": "Looks fine."}}]})
    )
    vague = EndpointJudge(cfg, transport=prose)
    assert vague.score(PROMPTS[:1], COMPLETIONS[:1]) == [0.0] and vague.errors == 1
    assert "no 'Step k: score' lines" in (vague.last_error or "")


def test_endpoint_judge_failures_reach_the_rl_watch() -> None:
    """A judge that keeps failing is not silent: its failures are counted with the grader's errors of the
    step, its message is in the step metrics, and the RL watch warns, then fails the job."""
    from trainer.watch import PROCESS_REWARD_ERROR, RLWatch

    rejected = httpx.Response(401, json={"error": {"message": "Incorrect API key provided"}})
    cfg = PRMConfig(type="endpoint", base_url="http://judge/v1", model="judge", api_key="sk-bad")
    judge = EndpointJudge(cfg, transport=httpx.MockTransport(lambda r: rejected), sleep=lambda s: None)
    spec = {"type": "string_check", "name": "g", "input": "{{ sample.output_text }}", "reference": "4"}
    spec["operation"] = "eq"
    box, watch, verdicts = StatsBox(), RLWatch(), []
    with Grader(spec) as g:
        reward = GraderReward(g, box, num_generations=2, prm=judge, alpha=0.7)
        for _ in range(3):
            out = reward(
                prompts=PROMPTS,
                completions=[[{"role": "assistant", "content": c}] for c in COMPLETIONS],
                item_json=["{}"] * 2,
            )
            assert out == [0.0, 0.0]  # the process score of a failed request is 0
            stats = box.pop()
            s = stats.summary()
            assert s["grader_error_counts"] == {PROCESS_REWARD_ERROR: 2}
            assert (
                "HTTP 401" in s["process_reward_error"] and "Incorrect API key" in s["process_reward_error"]
            )
            verdicts += watch.on_step(
                frac_flat=1.0, errors=s["grader_error_counts"], samples=len(stats.outcome)
            )
    assert [v.action for v in verdicts] == ["warn", "fail"]
    assert "process reward model failed" in verdicts[1].message and "openrft.prm" in verdicts[1].message
    assert judge.errors == 6


class FixedPRM:
    errors = 0
    last_error = None

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, prompts: list[Any], completions: list[str]) -> list[float]:
        return [self.value] * len(completions)


def test_reward_combines_outcome_and_process_and_counts_zero_signal_groups() -> None:
    spec = {
        "type": "string_check",
        "name": "g",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": "like",
    }
    box = StatsBox()
    items = [json.dumps({"answer": "4"})] * 4
    completions = [[{"role": "assistant", "content": c}] for c in ["4", "5", "six", "seven"]]
    with Grader(spec) as g:
        reward = GraderReward(g, box, num_generations=2, prm=FixedPRM(0.5), alpha=0.7)
        out = reward(prompts=[PROMPTS[0]] * 4, completions=completions, item_json=items)
    assert out == pytest.approx([0.7 + 0.15, 0.15, 0.15, 0.15])
    s = box.pop().summary()
    # Group 1 ("4", "5") has signal; group 2 ("six", "seven") is all-zero outcome: zero std.
    assert s["frac_reward_zero_std"] == 0.5
    assert s["train_outcome_reward"] == 0.25 and s["train_process_reward"] == 0.5
    assert box.current.rewards == []
