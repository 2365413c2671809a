"""The checks that keep a run from training blind: reward spread, the RL watch's verdicts, Wilson intervals."""

from __future__ import annotations

import pytest

from trainer.watch import RLWatch, error_share, group_spread, wilson_interval


def test_wilson_interval_matches_known_values() -> None:
    lo, hi = wilson_interval(10, 20)
    assert lo == pytest.approx(0.2993, abs=1e-3) and hi == pytest.approx(0.7007, abs=1e-3)
    lo, hi = wilson_interval(0, 20)  # p +- z*se would say [0, 0]: Wilson still allows up to ~16%
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
    # More rows, narrower interval around the same accuracy.
    lo20, hi20 = wilson_interval(10, 20)
    lo100, hi100 = wilson_interval(50, 100)
    assert hi100 - lo100 < 0.21 < hi20 - lo20


def test_group_spread_counts_flat_groups() -> None:
    scores = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]  # all right, all wrong, mixed
    s = group_spread([float(x) for x in scores], 4, lambda v: v >= 1)
    assert (s.groups, s.flat, s.all_correct, s.all_wrong) == (3, 2, 1, 1)
    assert s.frac_flat == pytest.approx(2 / 3) and s.mean_reward == pytest.approx(5 / 12)
    assert "2/3 groups have no reward spread (1 all wrong, 1 all correct)" in s.describe()


def test_error_share_counts_a_sample_once() -> None:
    assert error_share({"a": 3, "b": 9}, 8) == 1.0
    assert error_share({"a": 1}, 10) == 0.1 and error_share({}, 10) == 0.0 and error_share({"a": 1}, 0) == 0.0
    # A reply with no answer in it is the model's failure, which the reward already scores 0.
    assert error_share({"sample_parse_error": 10}, 10) == 0.0
    assert RLWatch().on_step(frac_flat=0.0, errors={"sample_parse_error": 8}, samples=8) == []


def test_flat_groups_end_rl_after_three_steps_in_a_row() -> None:
    w = RLWatch()
    assert w.on_step(frac_flat=1.0, errors={}, samples=8) == []
    assert w.on_step(frac_flat=0.5, errors={}, samples=8) == []  # a step with signal resets the run
    assert w.on_step(frac_flat=1.0, errors={}, samples=8) == []
    assert w.on_step(frac_flat=1.0, errors={}, samples=8) == []
    (v,) = w.on_step(frac_flat=1.0, errors={}, samples=8)
    assert v.action == "stop" and "3 steps in a row" in v.message


def test_grader_errors_warn_once_then_fail() -> None:
    w = RLWatch()
    (v,) = w.on_step(frac_flat=0.0, errors={"python_grader_runtime_error": 2}, samples=8)
    assert v.action == "warn" and "25%" in v.message
    assert w.on_step(frac_flat=0.0, errors={"python_grader_runtime_error": 2}, samples=8) == []  # once
    # Three steps at 25%, 25%, 100%: 50% in the window, not above it.
    assert [x.action for x in w.on_step(frac_flat=0.0, errors={"e": 8}, samples=8)] == []
    (v,) = w.on_step(frac_flat=0.0, errors={"e": 8}, samples=8)
    assert v.action == "fail" and v.code == "grader_error" and "graders/run" in v.message


def test_validation_patience() -> None:
    w = RLWatch(eval_patience=2)
    assert w.on_eval(improved=False) == []
    assert w.on_eval(improved=True) == []
    assert w.on_eval(improved=False) == []
    (v,) = w.on_eval(improved=False)
    assert v.action == "stop" and "2 evaluations in a row" in v.message


def test_a_step_where_every_rollout_scored_zero_warns_once_with_its_cause() -> None:
    w = RLWatch(flat_patience=10**9)  # early stopping off: the stage goes on, the user is told
    (v,) = w.on_step(frac_flat=1.0, errors={}, samples=8, mean_reward=0.0, step=4)
    assert v.action == "warn" and v.message.startswith("RL step 4: every rollout scored 0")
    assert "no reply was graded correct" in v.message
    assert w.on_step(frac_flat=1.0, errors={}, samples=8, mean_reward=0.0, step=5) == []  # once
    (flat,) = w.on_step(frac_flat=1.0, errors={}, samples=8, mean_reward=0.0, step=6)
    assert (
        flat.action == "warn" and "3 steps in a row" in flat.message and "early_stop is false" in flat.message
    )
    # Zeros the grader caused are said to be the grader's.
    w = RLWatch()
    verdicts = w.on_step(frac_flat=1.0, errors={"model_grader_server_error": 8}, samples=8, mean_reward=0.0)
    zero = next(v for v in verdicts if "every rollout scored 0" in v.message)
    assert "the grader failed on 8 of its 8 samples (model_grader_server_error: 8)" in zero.message
