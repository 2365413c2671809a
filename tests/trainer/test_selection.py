"""The final model's choice: paired comparisons on the same validation rows, never the raw maximum."""

from __future__ import annotations

import pytest

from trainer.selection import Candidate, choose, paired_difference, t_quantile


def test_t_quantiles_match_the_tables() -> None:
    # Student's t, two-sided 95%: 9 -> 2.262, 19 -> 2.093, 39 -> 2.023 degrees of freedom.
    for dof, want in ((9, 2.262), (19, 2.093), (39, 2.023)):
        assert t_quantile(0.975, dof) == pytest.approx(want, abs=2e-3)


def test_paired_interval() -> None:
    a = [1.0] * 6 + [0.0] * 14
    same = paired_difference(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and not same.better
    # b fixes 8 of a's 14 misses and breaks nothing: better with 95% confidence.
    b = [1.0] * 6 + [1.0] * 8 + [0.0] * 6
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.4) and d.low > 0 and d.better and not d.worse
    # The same gain in the means from 14 fixes and 6 breaks is not enough: paired, not by the means alone.
    c = [0.0] * 6 + [1.0] * 14
    assert paired_difference(a, c).mean == pytest.approx(0.4) and not paired_difference(a, c).better
    assert paired_difference(b, a).worse
    with pytest.raises(ValueError, match="different rows"):
        paired_difference(a, b[:-1])


def test_a_later_stage_replaces_an_earlier_one_only_when_better_on_the_same_rows() -> None:
    n = 40
    base = Candidate(0, "base", [1.0] * 10 + [0.0] * 30)  # 0.25
    # An RL checkpoint at 0.40 whose gains and losses on the rows nearly cancel: noise, the base stays.
    noisy = Candidate(50, "rl", [0.0] * 6 + [1.0] * 4 + [1.0] * 12 + [0.0] * 18)
    assert noisy.mean == pytest.approx(0.4)
    choice = choose([base, noisy])
    assert choice.chosen is base and choice.steps[0][3] is False
    # SFT that fixes 20 rows and breaks none wins; an RL checkpoint adding 2 rows does not replace it.
    sft = Candidate(10, "sft", [1.0] * 30 + [0.0] * 10)
    rl_small = Candidate(20, "rl", [1.0] * 32 + [0.0] * 8)
    choice = choose([base, sft, rl_small])
    assert choice.chosen is sft and [s[3] for s in choice.steps] == [True, False]
    # An RL checkpoint adding 8 rows does; of two RL checkpoints the better one stands for the stage.
    rl_big = Candidate(30, "rl", [1.0] * 38 + [0.0] * 2)
    assert choose([base, sft, rl_small, rl_big]).chosen is rl_big
    assert len(base.scores) == n


def test_rl_is_compared_with_the_base_where_sft_did_not_help() -> None:
    base = Candidate(0, "base", [1.0] * 12 + [0.0] * 28)
    sft_worse = Candidate(10, "sft", [1.0] * 3 + [0.0] * 37)
    rl = Candidate(30, "rl", [1.0] * 25 + [0.0] * 15)  # started from the base
    choice = choose([base, sft_worse, rl])
    assert choice.chosen is rl
    assert [(s[0].stage, s[1].stage, s[3]) for s in choice.steps] == [
        ("base", "sft", False),
        ("base", "rl", True),
    ]
