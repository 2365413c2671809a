"""One job on 1 and on 2 processes (gloo on the CPU, the tiny model): the same steps, checkpoints and SFT losses;
events from rank 0 only; a pause reaches every rank and the job resumes on 2 processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.test_distributed import free_port
from tests.trainer.test_pipeline import rft_spec
from trainer.distributed import Launch, run_distributed

SCRIPT = str(Path(__file__).with_name("dist_pipeline.py"))
pytestmark = pytest.mark.slow


def _run(
    spec: Any, tmp: Path, name: str, processes: int, *, stop_at: int | None = None, kind: str = "pause"
) -> list[dict[str, Any]]:
    spec_file = tmp / f"{name}.json"
    spec_file.write_text(spec.model_dump_json())
    out = tmp / f"out-{name}-{stop_at}"
    args = [SCRIPT, str(spec_file), str(tmp / f"work-{name}"), str(out)]
    rc = run_distributed(
        args + ([str(stop_at), kind] if stop_at is not None else []),
        Launch(processes=processes, master_port=free_port(), backend="gloo"),
        module=None,
    )
    assert rc == 0
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(processes)]


def _steps(rank: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    return [e["data"] for e in rank["events"] if e["kind"] == "metrics" and e["data"].get("stage") == stage]


def _checkpoints(rank: dict[str, Any]) -> list[int]:
    return [e["step"] for e in rank["events"] if e["kind"] == "checkpoint"]


def test_one_and_two_processes_run_the_same_job(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = rft_spec(tiny_model, rft_files)
    (one,) = _run(spec, tmp_path, "one", 1)
    two = spec.model_copy(update={"openrft": {**spec.openrft, "distributed": {"processes": 2}}})
    r0, r1 = _run(two, tmp_path, "two", 2)
    assert one["status"] == r0["status"] == r1["status"] == "succeeded"
    assert r0["world_size"] == 2 and r1["events"] == []  # one voice: rank 1 reported nothing
    # The same global batch: the same steps and plan, checkpoints at the same steps.
    for stage in ("sft", "rl"):
        assert [d["step"] for d in _steps(r0, stage)] == [d["step"] for d in _steps(one, stage)]
        assert [d["total_steps"] for d in _steps(r0, stage)] == [d["total_steps"] for d in _steps(one, stage)]
    assert _checkpoints(r0) == _checkpoints(one) == [3, 5, 7]
    # SFT sees the same examples in the same global batches: its losses agree closely (float sums in another
    # order); GRPO samples on each rank with its own seed, so only its shape is compared.
    losses_1 = [d["train_loss"] for d in _steps(one, "sft")]
    losses_2 = [d["train_loss"] for d in _steps(r0, "sft")]
    assert losses_2 == pytest.approx(losses_1, rel=0.02)
    rl = _steps(r0, "rl")
    assert all(d["train_mean_reward"] is not None and 0 <= d["frac_reward_zero_std"] <= 1 for d in rl)
    # The step's statistics count both ranks' rollouts: 2 prompts x 4 rollouts per step in both runs.
    assert [d["graded_samples"] for d in rl] == [d["graded_samples"] for d in _steps(one, "rl")] == [8] * 4
    assert sum(e["kind"] == "message" and "Final model" in e["text"] for e in r0["events"]) == 1
    final = tmp_path / "work-two" / "final" / "adapter" / "adapter_config.json"
    assert final.is_file() and not list((tmp_path / "work-two").glob("**/.tmp-*"))


def test_a_pause_reaches_every_rank_and_the_job_resumes(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = rft_spec(tiny_model, rft_files, distributed={"processes": 2})
    r0, r1 = _run(spec, tmp_path, "job", 2, stop_at=4)
    assert r0["status"] == r1["status"] == "paused"
    first = [d["step"] for d in _steps(r0, "sft") + _steps(r0, "rl")]
    assert first[-1] == 4  # both ranks stopped after the step rank 0 saw the pause at
    r0, r1 = _run(spec, tmp_path, "job", 2)
    assert r0["status"] == r1["status"] == "succeeded"
    assert any("Resuming at step 4" in e.get("text", "") for e in r0["events"])
    resumed = [d["step"] for d in _steps(r0, "rl")]
    assert resumed == [5, 6, 7]


def test_a_cancel_reaches_every_rank(tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path) -> None:
    spec = rft_spec(tiny_model, rft_files, distributed={"processes": 2})
    r0, r1 = _run(spec, tmp_path, "job", 2, stop_at=2, kind="cancel")
    assert r0["status"] == r1["status"] == "cancelled"
    assert [d["step"] for d in _steps(r0, "sft") + _steps(r0, "rl")][-1] == 2
    assert not (tmp_path / "work-job" / "final").exists()
