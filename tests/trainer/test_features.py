"""Pipeline options end to end on the tiny model: augmentation + process reward, max_minutes, merge, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import LIKE_GRADER, RecordingSink, ScriptedControl, write_jsonl
from trainer import JobSpec, run_job

MC = "Which one is a star?\nA. The sun\nB. The moon\nC. A cat\nD. Water"


@pytest.fixture
def mc_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [
        {"messages": [{"role": "user", "content": MC.replace("one", w)}], "answer": "A"}
        for w in ("one", "thing", "object", "item")
    ]
    return write_jsonl(tmp_path / "mc.jsonl", rows), write_jsonl(tmp_path / "mcv.jsonl", rows[:2])


def test_augmentation_and_self_prm(tiny_model: Path, mc_files: tuple[Path, Path], tmp_path: Path) -> None:
    sink = RecordingSink()
    spec = JobSpec(
        job_id="ftjob-da",
        method="reinforcement",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=mc_files[0],
        validation_file=mc_files[1],
        grader={"type": "multiple_choice", "name": "mc"},
        hyperparameters={"reasoning_effort": "low", "batch_size": 2},
        openrft={
            "augmentation": {"enabled": True, "n_variants": 3, "paraphrase": True},
            "sft": {"enabled": False},
            "rl": {"max_steps": 2, "num_generations": 2, "early_stop": False},
            "prm": {"type": "self", "alpha": 0.7, "max_steps": 2},
            "eval": {"at_start": False, "holdout": 0},
        },
    )
    res = run_job(spec, sink, ScriptedControl(), tmp_path / "w")
    assert res.status == "succeeded"
    msg = next(m for m in sink.messages() if m.startswith("Augmentation: 4 questions ->"))
    added = json.loads((tmp_path / "w" / "state" / "state.json").read_text())["counters"]["augmentation"]
    assert (
        f"-> {4 + added['rows_added']} RL rows" in msg and added["rows_added"] >= 4
    )  # shuffles alone add rows
    for d in sink.steps("rl"):
        assert 0.0 <= d["scores"]["train_process_reward_mean"] <= 1.0
        assert d["train_mean_reward"] == pytest.approx(
            0.7 * d["scores"]["train_outcome_reward_mean"] + 0.3 * d["scores"]["train_process_reward_mean"]
        )
    aug = (tmp_path / "w" / "state" / "artifacts" / "augmented.jsonl").read_text().splitlines()
    for line in aug:
        r = json.loads(line)
        text = r["messages"][-1]["content"]
        assert f"{r['item']['answer']}. The sun" in text  # the relabelled answer still names the right option


def test_max_minutes_pauses_with_a_resumable_snapshot(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = JobSpec(
        job_id="ftjob-budget",
        method="reinforcement",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=rft_files[0],
        validation_file=rft_files[1],
        grader=LIKE_GRADER,
        hyperparameters={"reasoning_effort": "low"},
        openrft={
            "sft": {"enabled": False},
            "rl": {"max_steps": 3, "early_stop": False},
            "eval": {"holdout": 0},
            "max_minutes": 0.0001,
        },
    )
    sink = RecordingSink()
    res = run_job(spec, sink, ScriptedControl(), tmp_path / "w")
    assert res.status == "paused"
    assert any("max_minutes=0.0001 reached" in m for m in sink.messages())
    assert [d["step"] for d in sink.steps("rl")] == [1]  # stopped at the first step boundary
    more = spec.model_copy(
        update={"openrft": {**spec.openrft, "max_minutes": 30}, "resume_from": res.snapshot_dir}
    )
    sink2 = RecordingSink()
    assert run_job(more, sink2, ScriptedControl(), tmp_path / "w").status == "succeeded"
    assert [d["step"] for d in sink2.steps("rl")] == [2, 3]


def test_merge_weights_match_the_adapter(
    tiny_model: Path, sft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = JobSpec(
        job_id="ftjob-merge",
        method="supervised",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=sft_files[0],
        hyperparameters={"n_epochs": 1},
        openrft={"merge_weights": True},
    )
    res = run_job(spec, RecordingSink(), ScriptedControl(), tmp_path / "w")
    assert res.model_dir == tmp_path / "w" / "final" / "merged"
    merged = AutoModelForCausalLM.from_pretrained(res.model_dir)
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / "w" / "final" / "adapter"
    )
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft(ids).logits, atol=1e-4)
    assert (res.model_dir / "tokenizer_config.json").is_file()


def test_cli_runs_a_yaml_spec(
    tiny_model: Path, sft_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from trainer.__main__ import main

    spec: dict[str, Any] = {
        "job_id": "ftjob-cli",
        "method": "supervised",
        "base_model": "tiny",
        "model_source": str(tiny_model),
        "training_file": sft_files[0].name,  # relative to the spec file
        "hyperparameters": {"n_epochs": 1},
    }
    path = sft_files[0].parent / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--workdir", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "[metrics] Step 3/3 (sft)" in out and "status=succeeded" in out
    spec["hyperparameters"] = {"n_epochs": 99}
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--workdir", str(tmp_path / "cli2")]) == 1
    assert "method.supervised.hyperparameters.n_epochs" in capsys.readouterr().err


def test_evaluate_job_on_a_held_out_file(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from trainer.pipeline import evaluate_job

    spec = JobSpec(
        job_id="ftjob-eval",
        method="reinforcement",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=rft_files[0],
        validation_file=rft_files[1],
        grader=LIKE_GRADER,
        hyperparameters={"reasoning_effort": "low"},
        openrft={
            "icl_k": 1,
            "rl": {"enabled": False},
            "sft": {"n_epochs": 3, "samples_per_question": 0, "learning_rate": 0.05},
            # Long responses to train on, so the trained greedy output visibly differs from the base model's.
            "response_template": "The answer is {answer}, as the sum shows.",
        },
    )
    res = run_job(spec, RecordingSink(), ScriptedControl(), tmp_path / "w")
    base = evaluate_job(spec, tmp_path / "w", rft_files[0], adapter_dir=None)
    # The SFT checkpoint (the job's final model may be the base: the tiny model gains nothing on validation).
    sft = max(res.checkpoints, key=lambda c: c.step)
    tuned = evaluate_job(spec, tmp_path / "w", rft_files[0], adapter_dir=sft.path)
    assert base.n_questions == tuned.n_questions == 12
    assert 0.0 <= base.accuracy <= 1.0 and 0.0 <= tuned.accuracy <= 1.0
    # A high learning rate moves the tiny model far from its all-newline greedy output: the adapter was used.
    assert [e["completion"] for e in base.examples] != [e["completion"] for e in tuned.examples]
