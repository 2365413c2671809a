"""The duration estimate: every stage that costs time is priced, from the plan and a calibration."""

from __future__ import annotations

import pytest

from trainer.config import Hardware, RunPlan, parse_config, plan_run
from trainer.estimate import Calibration, estimate_seconds

CAL = Calibration(gen_tokens_per_s=64.0, train_s_per_seq=0.5, seconds=1.0)


def _plan(openrft: dict) -> RunPlan:
    cfg = parse_config("reinforcement", {"batch_size": 2, "reasoning_effort": "low"}, openrft)
    return plan_run(cfg, n_train=100, hardware=Hardware(gpu=False, cpu_count=2))


def test_stages_are_priced_from_the_plan() -> None:
    plan = _plan(
        {"rl": {"max_steps": 4, "num_generations": 4}, "sft": {"samples_per_question": 1, "n_epochs": 1}}
    )
    parts = estimate_seconds(plan, CAL, n_val=20, sft_examples=100, synthesis_questions=100)
    gen = plan.max_completion_length / CAL.gen_tokens_per_s
    # generation at the calibrated throughput: every full-length sequence costs its tokens / (tokens/s)
    assert parts["synthesis"] == pytest.approx(gen * 100)
    assert parts["sft"] == pytest.approx(100 * 0.5 * 1.5)
    assert parts["rl"] == pytest.approx(4 * (8 * gen + 8 * 0.5))  # 2 prompts x 4 rollouts per step
    assert parts["augmentation"] == 0.0 and parts["eval"] > 0


def test_augmentation_is_priced_when_it_samples_paraphrases() -> None:
    plan = _plan({"rl": {"max_steps": 4}, "augmentation": {"enabled": True, "n_variants": 2}})
    parts = estimate_seconds(
        plan,
        CAL,
        n_val=0,
        sft_examples=100,
        synthesis_questions=100,
        augmentation_questions=100,
        augmentation_tokens=256,
    )
    assert parts["augmentation"] == pytest.approx(256 / 64 * 100)


def test_replies_after_sft_are_priced_at_the_trained_length() -> None:
    """A task with one-word answers: the base model fills its budget, the trained one writes a few tokens."""
    plan = _plan({"rl": {"max_steps": 4, "num_generations": 4}, "sft": {"samples_per_question": 1}})
    full = estimate_seconds(plan, CAL, n_val=20, sft_examples=100, synthesis_questions=100)
    short = estimate_seconds(plan, CAL, n_val=20, sft_examples=100, synthesis_questions=100, trained_tokens=4)
    assert short["synthesis"] == full["synthesis"]  # sampled from the base model: full length
    tuned = 8 / CAL.gen_tokens_per_s  # twice the mean: a batch waits for its longest reply
    assert short["rl"] == pytest.approx(4 * (8 * tuned + 8 * 0.5))
    assert short["eval"] < full["eval"] / 2
    # Without SFT the RL replies are the base model's: trained_tokens changes nothing.
    no_sft = _plan({"rl": {"max_steps": 4, "num_generations": 4}, "sft": {"enabled": False}})
    assert estimate_seconds(
        no_sft, CAL, n_val=20, sft_examples=0, synthesis_questions=0, trained_tokens=4
    ) == (estimate_seconds(no_sft, CAL, n_val=20, sft_examples=0, synthesis_questions=0))
