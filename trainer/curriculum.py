"""Dynamic sampling for GRPO on a small budget: groups whose rollouts all scored alike give no gradient, so a
prompt whose last group was flat (all right, or all equally wrong) gives its place in the next batches to prompts
that still have reward spread, within the same rollout budget (DAPO's dynamic sampling, as a curriculum: DAPO
over-samples and filters; on a CPU every rollout is the budget, so the flat prompts are skipped beforehand).

:class:`PromptStats` is filled by the reward function (each group's outcome per prompt uid); the sampler reads it
lazily as the trainer asks for batches, so a prompt seen flat is deprioritized from the next batch on. Under a
multi-process launch every rank must draw the same prompts: the curriculum is used in a world of one only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

FLAT_SOLVED, FLAT_UNSOLVED, SPREAD = "solved", "unsolved", "spread"


class PromptStats:
    """The last group outcome of each prompt (by uid): spread, flat and solved (every rollout passed), or flat
    and unsolved."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}
        self.skipped = 0
        """Prompts passed over because their last group was flat (reported with the step metrics)."""

    def record(self, uid: str, rewards: Sequence[float], *, passed: Sequence[bool]) -> None:
        if max(rewards) - min(rewards) > 1e-9:
            self.last[uid] = SPREAD
        else:
            self.last[uid] = FLAT_SOLVED if all(passed) else FLAT_UNSOLVED

    def rank(self, uid: str) -> int:
        """Lower first: never seen or with spread, then flat and unsolved (may still be learnt), then solved."""
        return {FLAT_UNSOLVED: 1, FLAT_SOLVED: 2}.get(self.last.get(uid, SPREAD), 0)


def curriculum_sampler(
    uids: Sequence[str],
    stats: PromptStats,
    *,
    mini_repeat_count: int,
    batch_size: int,
    repeat_count: int,
    seed: int,
) -> Any:
    """A drop-in for TRL's RepeatSampler (same length and index layout) whose batches prefer informative prompts."""
    import torch
    from torch.utils.data import Sampler

    class CurriculumSampler(Sampler[int]):
        def __init__(self) -> None:
            self.generator = torch.Generator()
            self.generator.manual_seed(seed)
            self.n = len(uids)

        def __iter__(self) -> Iterator[int]:
            order = torch.randperm(self.n, generator=self.generator).tolist()
            left = list(order)
            for _ in range(self.n // batch_size):
                # Re-read the stats for every batch: the groups of the previous batch have been graded by now.
                natural = set(left[:batch_size])
                left.sort(key=lambda i: stats.rank(uids[i]))  # stable: the shuffled order within a rank
                chunk, left = left[:batch_size], left[batch_size:]
                stats.skipped += len(natural - set(chunk))
                for _ in range(repeat_count):
                    for index in chunk:
                        for _ in range(mini_repeat_count):
                            yield index

        def __len__(self) -> int:
            return (self.n // batch_size) * batch_size * mini_repeat_count * repeat_count

    return CurriculumSampler()
