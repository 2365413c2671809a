"""Where RL starts (the better of base and SFT on validation) and what it starts with (a freshly loaded base
model with the saved SFT adapter, never the module SFT's trainer wrapped)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.trainer.conftest import LIKE_GRADER, RecordingSink, ScriptedControl
from trainer import JobSpec
from trainer.resume import RunState
from trainer.stages.rl import choose_rl_start


def _ctx(scores: dict[str, list[float]], done: list[str], sft_end: int) -> Any:
    state = RunState(job_id="j", method="reinforcement", done=done, stage_offsets={"rl": sft_end})
    state.valid_scores = scores
    sink = RecordingSink()
    return SimpleNamespace(state=state, sink=sink, save_state=lambda: None)


def test_rl_starts_from_the_base_where_sft_lowered_validation() -> None:
    ctx = _ctx({"0": [1.0] * 5 + [0.0] * 15, "30": [0.0] * 20}, ["sft"], 30)
    assert choose_rl_start(ctx) == "base"
    saved = ctx.state.counters["rl_start"]
    assert saved["start"] == "base" and saved["base"] == 0.25 and saved["sft"] == 0.0
    ((level, text),) = ctx.sink.of("message")
    assert level == "warn" and "from 0.250 to 0.000" in text and "over 20 rows" in text
    ctx.sink.events.clear()
    assert choose_rl_start(ctx) == "base" and not ctx.sink.events  # decided once, kept in the state


def test_rl_starts_from_sft_otherwise() -> None:
    ctx = _ctx({"0": [0.0] * 20, "30": [1.0] * 10 + [0.0] * 10}, ["sft"], 30)
    assert choose_rl_start(ctx) == "sft" and ctx.state.counters["rl_start"]["sft"] == 0.5
    # No baseline evaluation (eval.at_start false): from SFT, with its score as RL's bar to beat.
    ctx = _ctx({"30": [1.0] * 4}, ["sft"], 30)
    assert choose_rl_start(ctx) == "sft" and ctx.state.counters["rl_start"] == {"start": "sft", "sft": 1.0}
    # SFT disabled or without examples: from the base.
    assert choose_rl_start(_ctx({"0": [0.0]}, [], 0)) == "base"


@pytest.mark.parametrize("start", ["sft", "base"])
def test_rl_policy_is_a_fresh_base_with_the_saved_adapter(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path, start: str
) -> None:
    import torch

    from trainer.lora import attach_adapter
    from trainer.models import load_model
    from trainer.pipeline import Pipeline
    from trainer.stages.prepare import prepare

    spec = JobSpec(
        job_id="ftjob-start",
        method="reinforcement",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=rft_files[0],
        validation_file=rft_files[1],
        grader=LIKE_GRADER,
    )
    ctx = prepare(Pipeline(spec, RecordingSink(), ScriptedControl(), tmp_path / "w").books)
    # What SFT leaves behind: an adapter on disk whose B matrices are no longer zero.
    sft = attach_adapter(load_model(str(tiny_model)), rank=8, alpha=16, dropout=0.0)
    with torch.no_grad():
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    sft.save_pretrained(str(ctx.store.artifact("sft_adapter")))
    ctx.policy_model, old_base = sft, ctx.base_model  # the module SFT trained, still in memory
    ctx.state.counters["rl_start"] = {"start": start}

    policy = ctx.policy_for_rl()
    assert policy is not sft and ctx.base_model is not old_base  # loaded afresh, not handed over
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b)
    want = 0.5 if start == "sft" else 0.0
    assert all(bool((p == want).all()) for p in lora_b)
    assert ctx.policy_for_rl() is policy  # the probe and the RL stage share it


def _callback(rows: list[dict[str, Any]], rl_start: dict[str, Any], budget_s: float | None) -> Any:
    from trainer.stages.steps import StageCallback

    ctx = SimpleNamespace(
        state=SimpleNamespace(counters={"rl_start": rl_start}),
        reporter=SimpleNamespace(rows=rows),
        plan=SimpleNamespace(rl_time_budget_s=budget_s),
        sink=RecordingSink(),
    )
    return StageCallback(ctx, "rl", offset=0, eval_every=10, rank_by_loss=False)  # type: ignore[arg-type]


def test_rl_must_beat_its_start_and_its_own_evaluations() -> None:
    # Started from SFT at 0.6: an RL evaluation of 0.55 is no gain, though the base (0.3) was lower.
    cb = _callback([], {"start": "sft", "base": 0.3, "sft": 0.6}, None)
    assert cb._best_so_far() == 0.6
    rows = [{"stage": "rl", "full_valid_mean_reward": 0.7}, {"stage": "rl", "full_valid_mean_reward": ""}]
    assert _callback(rows, {"start": "base", "base": 0.3, "sft": 0.2}, None)._best_so_far() == 0.7
    assert (
        _callback([], {"start": "sft"}, None)._best_so_far() is None
    )  # nothing measured yet: any gain counts


def test_rl_ends_at_its_time_budget() -> None:
    rows = [{"stage": "sft", "full_iteration_s": 500.0}] + [{"stage": "rl", "full_iteration_s": 50.0}] * 10
    cb = _callback(rows, {"start": "sft"}, 600.0)
    cb._check_time_budget({"full_iteration_s": 40.0})  # 540 s of RL: goes on (SFT's time does not count)
    assert not cb.stop_now
    cb._check_time_budget({"full_iteration_s": 100.0})  # 600 s: the budget is spent
    assert cb.stop_now and "time budget (10 min" in cb.ctx.sink.messages()[0]
    cb = _callback(rows, {"start": "sft"}, None)
    cb._check_time_budget({"full_iteration_s": 1e6})
    assert not cb.stop_now


@pytest.mark.parametrize(("start", "rate"), [("sft", 5e-5), ("base", 2e-4)])
def test_rl_from_sft_learns_gently(start: str, rate: float) -> None:
    from dataclasses import replace

    from trainer.config import Hardware, parse_config, plan_run
    from trainer.stages.rl import start_plan

    plan = plan_run(
        parse_config("reinforcement", {}, {}), n_train=80, hardware=Hardware(gpu=False, cpu_count=2)
    )
    ctx = SimpleNamespace(plan=plan, rl_start=lambda: start)
    ctx.narrow_plan = lambda **kw: setattr(ctx, "plan", replace(ctx.plan, **kw))
    start_plan(ctx)  # type: ignore[arg-type]
    assert ctx.plan.rl_learning_rate == rate
    # A rate the user sets is used from either start.
    mine = plan_run(
        parse_config("reinforcement", {"learning_rate_multiplier": 2.0}, {"rl": {"learning_rate": 1e-4}}),
        n_train=80,
        hardware=Hardware(gpu=False, cpu_count=2),
    )
    assert mine.rl_learning_rate == mine.rl_learning_rate_from_sft == 2e-4
