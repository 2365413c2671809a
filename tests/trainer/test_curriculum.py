"""Dynamic sampling: prompts whose last group was flat give their place to prompts with reward spread."""

from __future__ import annotations

from collections import Counter

from trainer.curriculum import PromptStats, curriculum_sampler


def test_same_layout_as_trls_repeat_sampler() -> None:
    from trl.trainer.utils import RepeatSampler

    uids = [str(i) for i in range(7)]
    ours = curriculum_sampler(uids, PromptStats(), mini_repeat_count=2, batch_size=3, repeat_count=2, seed=1)
    theirs = RepeatSampler(uids, mini_repeat_count=2, batch_size=3, repeat_count=2, shuffle=True, seed=1)
    got, want = list(ours), list(theirs)
    assert len(ours) == len(theirs) == len(got) == len(want) == 24
    # With no stats every prompt ranks alike: TRL's order exactly (the same shuffle of the same seed).
    assert got == want


def test_flat_prompts_give_way_within_the_same_budget() -> None:
    uids = [str(i) for i in range(8)]
    stats = PromptStats()
    for i in range(4):  # prompts 0-3: every rollout right last time
        stats.record(str(i), [1.0, 1.0], passed=[True, True])
    stats.record("4", [0.0, 0.0], passed=[False, False])  # flat and wrong: after spread, before solved
    stats.record("5", [0.0, 1.0], passed=[False, True])
    sampler = curriculum_sampler(uids, stats, mini_repeat_count=2, batch_size=2, repeat_count=1, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 16 and Counter(order) == {i: 2 for i in range(8)}
    prompts = order[::2]
    assert set(prompts[:3]) == {5, 6, 7}  # spread or unseen first
    assert prompts[3] == 4 and set(prompts[4:]) == {0, 1, 2, 3}
    assert stats.skipped > 0


def test_stats_follow_the_last_group() -> None:
    stats = PromptStats()
    stats.record("a", [0.5, 0.5], passed=[False, False])
    assert stats.rank("a") == 1
    stats.record("a", [0.5, 1.0], passed=[False, True])
    assert stats.rank("a") == 0 and stats.rank("unseen") == 0
