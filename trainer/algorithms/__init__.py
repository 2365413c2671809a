"""RL algorithms: one module each, found by name (``openrft.rl.algorithm``).

A module ``trainer/algorithms/<name>.py`` defines ``ALGORITHM``, an :class:`RLAlgorithm`: it builds the HF
trainer of the RL stage for a run (policy, reward, rollouts, arguments) and says in one line what it will do.
The stage around it (resume, the step loop and its checkpoints, the RL watch, early ends) is the same for every
algorithm (trainer/stages/rl.py), so adding one (PPO, RLOO, ...) is adding its module.

Torch-free at import: the API validates ``rl.algorithm`` against :func:`names`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from trainer.data import Row
    from trainer.stages.context import RunContext
    from trainer.stages.steps import StageCallback


class RLAlgorithm(Protocol):
    name: str

    def build(self, ctx: RunContext, model: Any, rows: list[Row], callback: StageCallback) -> Any:
        """The HF trainer for ``rows`` (``max_steps`` = ``ctx.plan.rl_max_steps``), with ``callback`` in its
        callbacks. Set ``callback.stats_box`` to report rollout statistics (trainer.rl.StatsBox)."""

    def describe(self, ctx: RunContext) -> str:
        """One line for the job's events: the steps, batch and rollouts it will run."""


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> RLAlgorithm:
    if name not in names():
        raise ValueError(f"unknown RL algorithm {name!r}; available: {', '.join(names())}")
    algorithm: RLAlgorithm = importlib.import_module(f"{__name__}.{name}").ALGORITHM
    return algorithm
