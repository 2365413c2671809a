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


def test_the_probe_and_the_baseline_validation_are_priced() -> None:
    """The RL probe (a group of rollouts per probed prompt) and the baseline validation are parts of their
    own; every part of the estimate is one of estimate.PARTS."""
    from trainer.estimate import PARTS

    plan = _plan({"rl": {"max_steps": 4, "num_generations": 4}, "sft": {"samples_per_question": 1}})
    parts = estimate_seconds(plan, CAL, n_val=20, sft_examples=100, synthesis_questions=100, probe_prompts=8)
    gen = plan.max_completion_length / CAL.gen_tokens_per_s
    assert parts["probe"] == pytest.approx(8 * 4 * gen)
    assert parts["validation"] == pytest.approx(20 * plan.eval_samples * gen)
    assert tuple(parts) == PARTS
    no_probe = estimate_seconds(
        plan, CAL, n_val=20, sft_examples=100, synthesis_questions=100, baseline=False
    )
    assert no_probe["probe"] == 0.0 and no_probe["validation"] == 0.0


def test_time_left_follows_measured_progress() -> None:
    """Parts done take twice their estimate: what is left is scaled by two; the stage in progress counts at
    its measured pace; a resumed run does not judge the parts done before it."""
    from trainer.estimate import Remaining, parts_done

    parts = {"synthesis": 60.0, "validation": 20.0, "sft": 40.0, "probe": 30.0, "rl": 100.0, "eval": 10.0}
    rem = Remaining(parts, started=1000.0)
    assert rem.seconds_left(set(), now=1000.0) == pytest.approx(260.0)
    done = parts_done(["estimate", "synthesis", "eval0"], {}, rl=True)
    assert done == {"synthesis", "validation"}
    assert rem.seconds_left(done, now=1160.0) == pytest.approx(2 * 180.0)  # 160 s for 80 s of estimate
    assert rem.seconds_left(done, now=1160.0, current=("sft",), current_left=15.0) == pytest.approx(
        2 * 140.0 + 15.0
    )
    done = parts_done(["synthesis", "eval0", "sft"], {"rl_probe": {}}, rl=True)
    assert rem.seconds_left(done, now=1300.0, current=("rl", "eval"), current_left=50.0) == pytest.approx(
        50.0
    )
    resumed = Remaining(parts, started=5000.0, done_at_start=frozenset({"synthesis", "validation"}))
    assert resumed.factor({"synthesis", "validation"}, now=9000.0) == 1.0


def test_rows_without_references_and_the_rl_time_budget_are_priced() -> None:
    plan = _plan({"rl": {"time_budget_minutes": 2}, "sft": {"samples_per_question": 1}})
    parts = estimate_seconds(
        plan, CAL, n_val=0, sft_examples=100, synthesis_questions=30, searched_questions=70
    )
    gen = plan.max_completion_length / CAL.gen_tokens_per_s
    # 30 rows at 1 try, 70 at their best-of-k budget (8 tries on average on a CPU).
    assert plan.samples_without_reference == 8
    assert parts["synthesis"] == pytest.approx(gen * (30 + 70 * 8))
    # 120 planned steps, but RL stops at its 2 minutes: the estimate prices what fits in them.
    step = 8 * gen + 8 * 0.5
    assert plan.rl_max_steps == 120 and parts["rl"] == pytest.approx(round(120 / step) * step)
