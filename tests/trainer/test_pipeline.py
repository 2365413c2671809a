"""run_job end to end on the tiny model: supervised, reinforcement, pause/resume, cancel, resume after a kill."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.trainer.conftest import ARITH_ROWS, LIKE_GRADER, RecordingSink, ScriptedControl, write_jsonl
from trainer import JobResult, JobSpec, TrainerError, run_job


def _lora_weights(adapter_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def _rollouts(path: Path | None) -> list[dict[str, Any]]:
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()]


def rft_spec(model: Path, files: tuple[Path, Path], **openrft: Any) -> JobSpec:
    # Step counts are what these tests check: the early stops (tests of their own) stay off.
    ext: dict[str, Any] = {
        "rl": {"max_steps": 4, "early_stop": False},
        "sft": {"n_epochs": 1},
        "eval": {"holdout": 0},
    }
    ext.update(openrft)
    return JobSpec(
        job_id="ftjob-test",
        method="reinforcement",
        base_model="tiny",
        model_source=str(model),
        training_file=files[0],
        validation_file=files[1],
        grader=LIKE_GRADER,
        hyperparameters={"eval_interval": 2, "reasoning_effort": "low"},
        openrft=ext,
        seed=7,
    )


def test_supervised_trains_lora(tiny_model: Path, sft_files: tuple[Path, Path], tmp_path: Path) -> None:
    sink = RecordingSink()
    spec = JobSpec(
        job_id="ftjob-sup",
        method="supervised",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=sft_files[0],
        validation_file=sft_files[1],
        hyperparameters={"n_epochs": 2, "batch_size": 4},
    )
    res = run_job(spec, sink, ScriptedControl(), tmp_path / "work")
    assert res.status == "succeeded" and res.model_dir is not None and res.result_file is not None
    steps = sink.steps()
    assert [d["step"] for d in steps] == [1, 2, 3, 4, 5, 6] and steps[-1]["total_steps"] == 6
    assert steps[-1]["valid_loss"] > 0
    # LoRA B matrices start at zero: any non-zero one proves the adapter was trained.
    weights = _lora_weights(res.model_dir)
    assert any(float(w.abs().sum()) > 0 for k, w in weights.items() if "lora_B" in k)
    with open(res.result_file) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["train_loss"]
    assert res.trained_tokens > 0


@dataclass
class Run:
    sink: RecordingSink
    result: JobResult
    workdir: Path


@pytest.fixture(scope="module")
def reference_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One uninterrupted run of ``rft_spec`` (the rft_files rows): checked whole by the end-to-end test, and
    the run the paused-and-resumed one must match step for step."""
    root = tmp_path_factory.mktemp("reference")
    files = (write_jsonl(root / "train.jsonl", ARITH_ROWS), write_jsonl(root / "valid.jsonl", ARITH_ROWS[:3]))
    sink = RecordingSink()
    res = run_job(rft_spec(tiny_model, files), sink, ScriptedControl(), root / "work")
    return Run(sink, res, root / "work")


# The two tests of the reference run share it: one worker runs both.
@pytest.mark.xdist_group("pipeline-reference-run")
def test_reinforcement_end_to_end(reference_run: Run) -> None:
    sink, res = reference_run.sink, reference_run.result
    assert res.status == "succeeded" and res.model_dir is not None
    sft = sink.steps("sft")
    rl = sink.steps("rl")
    assert len(sft) == 3 and len(rl) == 4
    assert rl[-1]["step"] == rl[-1]["total_steps"] == 7
    for d in rl:
        assert d["policy_lag"] == 0  # synchronous mode: rollouts come from the weights just updated
        assert 0.0 <= d["frac_reward_zero_std"] <= 1.0
        assert d["timing"]["step"]["sampling"] > 0 and "train_mean_reward" in d
    assert sink.steps("baseline")[0]["step"] == 0
    saved = [s for s, _, _ in sink.of("checkpoint_saved")]
    assert saved == [3, 5, 7]  # end of SFT, then every eval_interval RL steps and the last
    assert all("full_valid_mean_reward" in m for _, _, m in sink.of("checkpoint_saved"))
    # Every stage is in the estimate, the RL probe included, and the time left is re-estimated as stages end
    # (synthesis, the baseline validation, SFT), not only at steps.
    announced = next(m for m in sink.messages() if m.startswith("Estimated duration"))
    assert "probe" in announced and "validation" in announced, announced
    estimates = sink.of("estimate")
    assert len(estimates) >= len(sft) + len(rl) + 3
    assert all(finish_at > 0 for finish_at, _, _ in estimates)
    assert any(
        "Synthesis:" in d.get("stage", "") or d.get("stage") == "synthesis" for d in sink.of("metrics")
    )
    # The final model is the paired choice among base, SFT and RL (trainer.selection), said in one event; its
    # adapter is that checkpoint's, or a zero update where the base was kept.
    (summary,) = [d for d in sink.of("metrics") if d.get("stage") == "summary"]
    assert summary["valid_rows"] == 3 and {"base_valid_mean_reward", "sft_valid_mean_reward"} <= set(summary)
    final = _lora_weights(res.model_dir)
    trained = any(float(w.abs().sum()) > 0 for k, w in final.items() if "lora_B" in k)
    assert trained == (summary["chosen_stage"] != "base")
    if trained:
        chosen = _lora_weights(reference_run.workdir / "checkpoints" / f"step-{summary['chosen_step']}")
        assert all(bool((chosen[k] == w).all()) for k, w in final.items())
    assert (reference_run.workdir / "final" / "adapter" / "adapter_config.json").is_file()
    # One group per RL step: the same prompt, each completion with the reward it was trained on.
    lines = _rollouts(res.rollouts_file)
    per_step = Counter(r["step"] for r in lines)
    assert sorted(per_step) == [4, 5, 6, 7] and len(set(per_step.values())) == 1 and per_step[4] >= 2
    assert {r["stage"] for r in lines} == {"rl"}
    for step in (4, 5, 6, 7):
        group = [r for r in lines if r["step"] == step]
        assert len({r["prompt"] for r in group}) == 1 and group[0]["prompt"]
        assert all(isinstance(r["completion"], str) for r in group)
        assert all(r["reward"] == r["outcome_reward"] and r["process_reward"] is None for r in group)
    assert all(0.0 <= r["reward"] <= 1.0 for r in lines)
    # The live view: each RL step's metrics event has the group's best and worst completion.
    for d in rl:
        live = d["rollouts"]
        group = [r for r in lines if r["step"] == d["step"]]
        assert live["group_size"] == len(group) and live["prompt"] == group[0]["prompt"]
        best, worst = live["completions"]
        assert best["reward"] == max(r["reward"] for r in group) and worst["reward"] == min(
            r["reward"] for r in group
        )
        assert any(r["completion"].startswith(best["text"]) for r in group)


def test_keep_best_three(tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path) -> None:
    sink = RecordingSink()
    spec = rft_spec(tiny_model, rft_files, sft={"enabled": False}).model_copy(
        update={"hyperparameters": {"eval_interval": 1, "reasoning_effort": "low"}}
    )
    res = run_job(spec, sink, ScriptedControl(), tmp_path / "work")
    assert [s for s, _, _ in sink.of("checkpoint_saved")] == [1, 2, 3, 4]
    assert len(sink.of("checkpoint_removed")) == 1
    kept = sorted(p.name for p in (tmp_path / "work" / "checkpoints").iterdir() if not p.name.startswith("."))
    assert len(kept) == 3 and len(res.checkpoints) == 3


@pytest.mark.xdist_group("pipeline-reference-run")
def test_pause_then_resume_continues_at_same_step(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path, reference_run: Run
) -> None:
    spec = rft_spec(tiny_model, rft_files)
    ref = reference_run.sink  # the same job without interruption
    # Same job paused right after step 5 (RL step 2), then resumed from the snapshot.
    sink, ctl = RecordingSink(), ScriptedControl()
    sink.on_metrics = lambda d: setattr(ctl, "request", "pause") if d.get("step") == 5 else None
    res = run_job(spec, sink, ctl, tmp_path / "work")
    assert res.status == "paused" and res.snapshot_dir is not None
    assert (res.snapshot_dir / "trainer" / "optimizer.pt").is_file()
    assert any("Paused at step 5" in m for m in sink.messages())
    sink2 = RecordingSink()
    res2 = run_job(
        spec.model_copy(update={"resume_from": res.snapshot_dir}), sink2, ScriptedControl(), tmp_path / "work"
    )
    assert res2.status == "succeeded" and res2.result_file is not None
    assert [d["step"] for d in sink2.steps("rl")] == [6, 7]
    # Same data order, RNG and optimizer state: the resumed steps match the uninterrupted run.
    want = {d["step"]: d for d in ref.steps("rl")}
    for d in sink2.steps("rl"):
        assert d["train_loss"] == pytest.approx(want[d["step"]]["train_loss"], abs=1e-6)
        assert d["train_mean_reward"] == want[d["step"]]["train_mean_reward"]
    with open(res2.result_file) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(0, 8))


def test_cancel_stops_within_a_step(tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path) -> None:
    sink, ctl = RecordingSink(), ScriptedControl()
    sink.on_metrics = lambda d: setattr(ctl, "request", "cancel") if d.get("step") == 4 else None
    res = run_job(rft_spec(tiny_model, rft_files), sink, ctl, tmp_path / "work")
    assert res.status == "cancelled"
    assert max(d["step"] for d in sink.steps()) == 4
    leftovers = [p for p in (tmp_path / "work").rglob(".tmp-*")]
    assert leftovers == []


def test_cancel_during_generation_is_prompt(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A cancel that arrives mid-generation stops at the next token (the forward hook / stopping criteria)."""
    sink = RecordingSink()

    class CancelAfterPolls(ScriptedControl):
        def poll(self) -> Literal["cancel", "pause"] | None:
            self.polls += 1
            return "cancel" if self.polls > 30 else None

    ctl = CancelAfterPolls()
    res = run_job(rft_spec(tiny_model, rft_files, sft={"enabled": False}), sink, ctl, tmp_path / "work")
    assert res.status == "cancelled"
    assert ctl.polls == 31  # nothing ran after the poll that said cancel


def test_killed_worker_resumes_from_last_checkpoint(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = rft_spec(tiny_model, rft_files)
    sink, ctl = RecordingSink(), ScriptedControl()

    class Killed(Exception):
        pass

    def kill(d: dict) -> None:
        if d.get("step") == 6:
            raise Killed  # the worker dies between checkpoints (last one: step 5)

    sink.on_metrics = kill
    with pytest.raises(Killed):
        run_job(spec, sink, ctl, tmp_path / "work")
    # Step 6's rollouts were written before the kill, and the kill tore a line: both are dropped on resume.
    log = tmp_path / "work" / "rollouts.jsonl"
    before = Counter(r["step"] for r in _rollouts(log))
    assert sorted(before) == [4, 5, 6]
    with log.open("a") as fh:
        fh.write('{"step": 6, "stage": "rl", "prom')
    sink2 = RecordingSink()
    res = run_job(spec, sink2, ScriptedControl(), tmp_path / "work")
    assert res.status == "succeeded"
    assert [d["step"] for d in sink2.steps("rl")] == [6, 7]
    assert any("Resuming at step 5" in m for m in sink2.messages())
    assert Counter(r["step"] for r in _rollouts(res.rollouts_file)) == {**before, 7: before[6]}


def test_bad_inputs_raise_trainer_error(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = rft_spec(tiny_model, rft_files).model_copy(update={"hyperparameters": {"n_epochs": 0}})
    with pytest.raises(TrainerError) as err:
        run_job(spec, RecordingSink(), ScriptedControl(), tmp_path / "a")
    assert err.value.param == "method.reinforcement.hyperparameters.n_epochs"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\nnot json\n')
    spec = rft_spec(tiny_model, (bad, rft_files[1]))
    with pytest.raises(TrainerError) as err:
        run_job(spec, RecordingSink(), ScriptedControl(), tmp_path / "b")
    assert (
        err.value.code == "invalid_training_file"
        and "line 1" in err.value.message
        and "line 2" in err.value.message
    )
    spec = rft_spec(tmp_path / "nowhere", rft_files)
    with pytest.raises(TrainerError) as err:
        run_job(spec, RecordingSink(), ScriptedControl(), tmp_path / "c")
    assert err.value.param == "model" and "Available here" in err.value.message
    shutil.rmtree(tmp_path / "a", ignore_errors=True)


PY_ANSWER_GRADER = {
    "type": "python",
    "name": "exact",
    "source": "def grade(sample, item):\n    return float(sample['output_text'].strip() == item['answer'])\n",
}


def test_user_shaped_job_finds_references_and_skips_rl_it_cannot_learn(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A python grader reading item["answer"] and no reference option (the shape users bring): the reference
    is found, SFT trains on it, and RL, whose probe groups all score alike on the untrained tiny model, is
    skipped with the reason instead of spending its steps on zero gradients."""
    sink = RecordingSink()
    spec = JobSpec(
        job_id="ftjob-user",
        method="reinforcement",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=rft_files[0],
        validation_file=rft_files[1],
        grader=PY_ANSWER_GRADER,
        hyperparameters={"reasoning_effort": "low"},
        openrft={
            "rl": {"max_steps": 6, "probe_prompts": 4},
            "sft": {"n_epochs": 1, "samples_per_question": 1},
        },
        seed=3,
    )
    res = run_job(spec, sink, ScriptedControl(), tmp_path / "work")
    assert res.status == "succeeded"
    messages = sink.messages()
    # 12 training rows and 3 validation rows: 2 training rows join the checkpoint-selection set.
    assert any(
        "2 training rows are held out of training and join the 3 validation rows" in m for m in messages
    )
    assert any(
        "Reference responses: 10/10 training rows" in m and "item.answer for 10" in m for m in messages
    )
    probes = [d for d in sink.of("metrics") if d.get("stage") == "rl_probe"]
    assert probes and probes[0]["groups"] == 4 and probes[0]["frac_reward_zero_std"] == 1.0
    assert probes[-1]["num_generations"] == 8  # the retry doubled the group
    skipped = [(lvl, m) for lvl, m in sink.of("message") if m.startswith("RL skipped")]
    assert skipped and skipped[0][0] == "warn" and "no gradient" in skipped[0][1]
    assert not sink.steps("rl")
    state = json.loads((tmp_path / "work" / "state" / "state.json").read_text())
    assert state["total_steps"] == sink.steps("sft")[-1]["step"]  # the plan shrank to what ran
    assert sink.steps("sft")[-1]["full_valid_accuracy_ci"][1] > 0  # an interval, even at 0 correct


def test_flat_rl_ends_early_and_keeps_the_best(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    sink = RecordingSink()
    spec = rft_spec(tiny_model, rft_files, sft={"enabled": False}).model_copy(
        update={"grader": PY_ANSWER_GRADER}
    )
    spec.openrft["rl"] = {"max_steps": 8, "probe_prompts": 0}  # no probe: the watch alone ends the stage
    res = run_job(spec, sink, ScriptedControl(), tmp_path / "work")
    assert res.status == "succeeded"
    rl = sink.steps("rl")
    assert [d["step"] for d in rl] == [1, 2, 3] and all(d["frac_reward_zero_std"] == 1.0 for d in rl)
    assert any(lvl == "warn" and m.startswith("RL ended early") for lvl, m in sink.of("message"))
    # A job that learns nothing says so at once, at warn level, with the cause (here: no reply is right).
    zero = [m for lvl, m in sink.of("message") if lvl == "warn" and "every rollout scored 0" in m]
    assert len(zero) == 1 and zero[0].startswith("RL step 1:") and "no reply was graded correct" in zero[0]
    saved = [s for s, _, _ in sink.of("checkpoint_saved")]
    assert 3 in saved  # the early end is checkpointed like a last step
    state = json.loads((tmp_path / "work" / "state" / "state.json").read_text())
    assert state["total_steps"] == 3  # the plan shrank to the steps that ran


@pytest.mark.parametrize("reference", [None, "{{ item.answer }}"])
def test_a_grader_that_always_fails_fails_the_job_early(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path, reference: str | None
) -> None:
    broken = {
        "type": "python",
        "name": "broken",
        "source": "def grade(sample, item):\n    return item['nope']\n",
    }
    extra = {"reference": reference} if reference else {}
    spec = rft_spec(tiny_model, rft_files, **extra).model_copy(update={"grader": broken})
    sink = RecordingSink()
    with pytest.raises(TrainerError) as err:
        run_job(spec, sink, ScriptedControl(), tmp_path / "work")
    assert err.value.code == "grader_error" and "The grader failed on 100%" in err.value.message
    assert not sink.steps("sft") and not sink.steps("rl")  # found at the baseline evaluation, before training
    # The zeros of the stages before it are said to be the grader's, not the model's.
    warned = [m for lvl, m in sink.of("message") if lvl == "warn"]
    ref = next(m for m in warned if m.startswith("Reference responses"))
    assert "The grader itself failed on" in ref and "python_grader_runtime_error" in ref
    synthesis = next(m for m in warned if m.startswith("SFT has nothing to learn"))
    assert "The grader itself failed on" in synthesis
    # Advice to set openrft.reference only when it is not set.
    assert ("Set openrft.reference" in ref) is (reference is None)
    assert ("openrft.reference is set" in ref) is (reference is not None)


@pytest.mark.parametrize(
    ("stage", "openrft"),
    [
        ("synthesis", {"icl_k": 0}),
        ("validation", {"sft": {"enabled": False}, "icl_k": 0}),
    ],
)
def test_cancel_while_a_model_grader_works_ends_the_job_in_seconds(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path, stage: str, openrft: dict[str, Any]
) -> None:
    """A score_model judge that takes a minute per call (a busy CPU engine): the user cancels while the stage
    waits on it (synthesis, or the baseline validation), and the job ends within seconds, its judge
    requests dropped, instead of after the batch."""
    import threading
    import time

    from tests.trainer.graders.servers import completion, serve

    cancel_at: list[float] = []
    hang, release = threading.Event(), threading.Event()
    ctl = ScriptedControl()

    def judge(path: str, body: dict[str, Any], headers: dict[str, str], rec: Any) -> tuple[int, Any]:
        if hang.is_set():
            if not cancel_at:
                cancel_at.append(time.monotonic())
                ctl.request = "cancel"
            release.wait(60)
        return 200, completion('{"steps": [], "result": 0}')

    class Sink(RecordingSink):
        def message(self, text: str, *, level: str = "info") -> None:
            super().message(text, level=level)
            if text.startswith("Reference responses"):  # the next grading is the stage's
                hang.set()

    sink = Sink()
    with serve(judge) as (url, _rec):
        spec = rft_spec(tiny_model, rft_files, **openrft).model_copy(
            update={
                "grader": {
                    "type": "score_model",
                    "name": "judge",
                    "model": "slow-judge",
                    "input": [{"role": "user", "content": "{{ item.answer }} {{ sample.output_text }}"}],
                },
                "grader_settings": {"models": {"slow-judge": {"base_url": url + "/v1"}}},
            }
        )
        try:
            res = run_job(spec, sink, ctl, tmp_path / "work")
            ended = time.monotonic()
        finally:
            release.set()
    assert res.status == "cancelled" and cancel_at, sink.messages()
    assert ended - cancel_at[0] < 5.0, ended - cancel_at[0]
    assert not any("Synthesized" in m for m in sink.messages()) or stage == "validation"
    assert not sink.steps()  # nothing after the stage that was cancelled
