"""trainer.launch.launch_job: a tiny reinforcement job on two gloo processes, driven like a worker drives it (a sink
and a control in this process): one set of events, checkpoints recorded before the ranks go on, pause
reaching every rank, and a rank's TrainerError raised here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import RecordingSink, ScriptedControl
from tests.trainer.test_pipeline import rft_spec
from trainer import TrainerError
from trainer.interface import STATE_DIR, JobSpec
from trainer.launch import LAUNCH_DIR, launch_job, local_launch

# A set group size (the plan's own at these settings): the RL probe may not double it, which would halve the RL
# steps these tests count.
TWO = {"distributed": {"processes": 2}, "rl": {"max_steps": 2, "early_stop": False, "num_generations": 4}}


def two_process_spec(model: Path, files: tuple[Path, Path]) -> JobSpec:
    return rft_spec(model, files, **TWO)


class UploadingSink(RecordingSink):
    """Reads the state directory during each checkpoint, as the worker's upload does, taking its time: the
    ranks must not write the next state meanwhile."""

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir
        self.states_seen: list[tuple[Any, Any]] = []

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        before = self._state()
        time.sleep(0.5)
        self.states_seen.append((before, self._state()))
        super().checkpoint_saved(step, path, metrics)

    def _state(self) -> Any:
        f = self.workdir / STATE_DIR / "state.json"
        return f.stat().st_mtime_ns if f.exists() else None


def steps_of(sink: RecordingSink) -> list[int]:
    return [d["step"] for d in sink.steps() if d.get("stage") in ("sft", "rl")]


def test_two_processes_report_one_set_of_events(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    sink = UploadingSink(workdir)
    res = launch_job(
        two_process_spec(tiny_model, rft_files), sink, ScriptedControl(), workdir, local_launch(2, gpu=False)
    )
    assert res.status == "succeeded" and res.model_dir is not None and res.model_dir.is_dir()
    # One process's steps: 12 rows in SFT batches of 4, then 2 RL steps; each reported once.
    assert steps_of(sink) == [1, 2, 3, 4, 5]
    assert [d["step"] for d in sink.steps("rl")] == [4, 5] and sink.steps("rl")[-1]["total_steps"] == 5
    assert len(sink.steps("baseline")) == 1
    saved = [s for s, _, _ in sink.of("checkpoint_saved")]
    assert saved and len(saved) == len(set(saved))
    assert all(before == after for before, after in sink.states_seen)  # nothing written during an upload
    # The whole JobResult came back from rank 0.
    assert [c.step for c in res.checkpoints] == sorted(set(saved) - set(sink.of("checkpoint_removed")))
    assert res.result_file is not None and res.result_file.is_file()
    assert res.rollouts_file is not None and res.rollouts_file.is_file() and res.trained_tokens > 0
    assert not list((workdir / LAUNCH_DIR).glob("failed-rank-*"))


class PauseDuringCheckpoint(RecordingSink):
    """Asks to pause while it records the checkpoint of ``step``, and takes long enough that the request is in
    the control file when the ranks go on (the worker's control reaches them within about a second)."""

    def __init__(self, control: ScriptedControl, step: int) -> None:
        super().__init__()
        self.control = control
        self.step = step

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        super().checkpoint_saved(step, path, metrics)
        if step == self.step:
            self.control.request = "pause"
            time.sleep(1.5)


@pytest.mark.slow
def test_pause_reaches_both_ranks_and_the_job_resumes(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = two_process_spec(tiny_model, rft_files)
    workdir = tmp_path / "work"
    ctl = ScriptedControl()
    sink = PauseDuringCheckpoint(ctl, step=3)
    # Both ranks stop at the same step (one still training would keep the launch from ending).
    res = launch_job(spec, sink, ctl, workdir, local_launch(2, gpu=False))
    assert res.status == "paused" and res.snapshot_dir is not None
    assert steps_of(sink) == [1, 2, 3]
    assert any("Paused at step 3" in m for m in sink.messages())
    resumed = RecordingSink()
    res2 = launch_job(
        spec.model_copy(update={"resume_from": res.snapshot_dir}),
        resumed,
        ScriptedControl(),
        workdir,
        local_launch(2, gpu=False),
    )
    assert res2.status == "succeeded"
    assert steps_of(resumed) == [4, 5]
    assert any("Resuming at step 3" in m for m in resumed.messages())


def test_a_ranks_trainer_error_is_raised_in_the_caller(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = rft_spec(tiny_model, rft_files, **TWO).model_copy(update={"hyperparameters": {"n_epochs": 0}})
    with pytest.raises(TrainerError) as err:
        launch_job(spec, RecordingSink(), ScriptedControl(), tmp_path / "w", local_launch(2, gpu=False))
    assert err.value.param == "method.reinforcement.hyperparameters.n_epochs"
    assert err.value.code == "invalid_hyperparameters"
    note = json.loads((tmp_path / "w" / LAUNCH_DIR / "failed-rank-1.json").read_text())
    assert note["code"] == "invalid_hyperparameters"


def test_two_nodes_run_one_job_through_the_cli(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """``python -m trainer run`` on two "nodes" (one process each, 127.0.0.1) meeting at one static address,
    sharing the working directory: one job, reported by node 0."""
    import subprocess
    import sys

    from tests.trainer.test_distributed import free_port

    spec = rft_spec(tiny_model, rft_files, rl={"max_steps": 2, "early_stop": False})
    spec_file = tmp_path / "job.json"
    spec_file.write_text(spec.model_dump_json())
    port = str(free_port())
    workdir = tmp_path / "shared-work"
    common = [sys.executable, "-m", "trainer", "run", str(spec_file), "--workdir", str(workdir)]
    common += ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port]
    nodes = [
        subprocess.Popen(
            [*common, "--node-rank", str(rank)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for rank in (0, 1)
    ]
    outs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outs
    assert "2 in all" in outs[0] and "[done] status=succeeded" in outs[0]
    steps = [line for line in outs[0].splitlines() if "[metrics] Step" in line and "/5 (" in line]
    assert len(steps) == 6  # the baseline and steps 1-5, once
    assert "[metrics]" not in outs[1]
    assert json.loads((workdir / "launch_result.json").read_text())["status"] == "succeeded"
