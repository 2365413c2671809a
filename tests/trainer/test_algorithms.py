"""The rl.algorithm seam: algorithms are found by module name, and the RL stage (resume, step loop, watch,
checkpoints) works with any of them; adding one is adding a module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import trainer.algorithms as algorithms
from tests.trainer.conftest import RecordingSink, ScriptedControl
from tests.trainer.test_pipeline import rft_spec
from trainer import run_job
from trainer.config import ConfigError, parse_config

# A new algorithm, as a user would add one: its own module. This one trains like GRPO and counts its builds.
TOY = """
from trainer.algorithms.grpo import GRPO

BUILT = []


class Toy(GRPO):
    name = "toy"

    def build(self, ctx, model, rows, callback):
        BUILT.append(len(rows))
        return super().build(ctx, model, rows, callback)

    def describe(self, ctx):
        return f"RL (toy): {ctx.plan.rl_max_steps} steps"


ALGORITHM = Toy()
"""


def test_grpo_is_the_default_and_unknown_names_are_refused() -> None:
    assert "grpo" in algorithms.names()
    assert parse_config("reinforcement", {}, {}).openrft.rl.algorithm == "grpo"
    with pytest.raises(ConfigError) as err:
        parse_config("reinforcement", {}, {"rl": {"algorithm": "ppo"}})
    assert err.value.param == "openrft.rl.algorithm" and "available: grpo" in err.value.message


def test_a_new_algorithm_is_one_module(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "plugins"
    extra.mkdir()
    (extra / "toy.py").write_text(TOY)
    monkeypatch.setattr(algorithms, "__path__", [*algorithms.__path__, str(extra)])
    assert "toy" in algorithms.names()
    sink = RecordingSink()
    spec = rft_spec(tiny_model, rft_files, rl={"max_steps": 2, "early_stop": False, "algorithm": "toy"})
    res = run_job(spec, sink, ScriptedControl(), tmp_path / "work")
    assert res.status == "succeeded"
    import trainer.algorithms.toy as toy  # type: ignore[import-not-found]

    assert len(toy.BUILT) == 1 and toy.BUILT[0] > 0  # built once, for the RL rows
    assert any(m.startswith("RL (toy): 2 steps") for m in sink.messages())
    assert [d["step"] for d in sink.steps("rl")] == [4, 5]  # the shared step loop reported both steps
    monkeypatch.delitem(sys.modules, "trainer.algorithms.toy")
