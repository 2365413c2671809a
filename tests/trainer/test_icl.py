"""Few-shot ICL: retrieval by embedding similarity, no self-retrieval, one prompt for SFT, RL and eval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer.conftest import LIKE_GRADER, RecordingSink, ScriptedControl
from trainer.data import Row
from trainer.icl import Embedder, ExampleBank
from trainer.prompts import Example, build_prompt


def row(i: int, text: str, *, split: str = "train", source: int | None = None, uid: str | None = None) -> Row:
    meta: dict[str, Any] = {"split": split}
    if uid:
        meta["uid"] = uid
    return Row(
        index=i,
        messages=[{"role": "user", "content": text}],
        item={"answer": str(i)},
        source_index=source,
        meta=meta,
    )


class BagOfWords:
    """Deterministic embedder for retrieval logic tests."""

    vocab = ["cat", "dog", "sun", "moon", "star", "water"]

    def encode(self, texts: list[str]) -> np.ndarray:
        v = np.array([[t.lower().count(w) for w in self.vocab] for t in texts], dtype=float) + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_nearest_examples_exclude_self_and_siblings() -> None:
    train = [row(0, "cat cat"), row(1, "cat dog"), row(2, "sun moon"), row(3, "star water")]
    answers = {r.uid: f"ans{r.index}" for r in train}
    bank = ExampleBank(train, answers, k=2, embedder=BagOfWords())
    got = bank.examples_for(train[0])
    assert [e.answer for e in got][-1] == "ans1"  # the closest sits right before the question
    assert all(e.answer != "ans0" for e in got)
    sibling = row(10, "cat cat cat", source=0, uid="0.1")  # augmented from row 0: must not see row 0
    assert "ans0" not in [e.answer for e in bank.examples_for(sibling)]
    valid = row(0, "cat cat", split="valid")  # validation rows may retrieve any training row
    assert bank.examples_for(valid)[-1].answer == "ans0"


def test_rows_without_a_reference_response_are_not_examples() -> None:
    train = [row(0, "cat"), row(1, "cat dog")]
    bank = ExampleBank(train, {"0": None, "1": "ans1"}, k=3, embedder=BagOfWords())
    assert [e.answer for e in bank.examples_for(row(5, "cat", split="valid"))] == ["ans1"]


def test_minilm_embeddings_rank_paraphrases_first() -> None:
    emb = Embedder()
    v = emb.encode(
        ["How many legs does a spider have?", "Count the legs of a spider.", "What is the capital of France?"]
    )
    assert v.shape[0] == 3 and float(v[0] @ v[1]) > float(v[0] @ v[2])


def test_prompt_layout() -> None:
    r = Row(
        index=0, messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "Q?"}], item={}
    )
    msgs = build_prompt(r, system_prompt="Task.", examples=[Example("q1", "a1")])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "Task.\n\nsys" and msgs[1:3] == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
    ]


@pytest.mark.slow
def test_same_prompt_in_sft_rl_and_eval(
    tiny_model: Path, rft_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.evaluation
    import trainer.rl
    import trainer.sft
    from trainer import JobSpec, run_job

    seen: dict[str, list[Any]] = {"sft": [], "rl": [], "eval": []}
    real_sft, real_rl, real_eval = (
        trainer.sft.make_sft_trainer,
        trainer.rl.make_grpo_trainer,
        trainer.evaluation.evaluate,
    )

    def spy_sft(**kw: Any) -> Any:
        seen["sft"] += [e["prompt"] for e in kw["examples"]]
        return real_sft(**kw)

    def spy_rl(**kw: Any) -> Any:
        seen["rl"] += list(kw["train_dataset"]["prompt"])
        return real_rl(**kw)

    def spy_eval(model: Any, tok: Any, prompts: list[Any], *a: Any, **kw: Any) -> Any:
        seen["eval"].append(prompts)
        return real_eval(model, tok, prompts, *a, **kw)

    monkeypatch.setattr(trainer.sft, "make_sft_trainer", spy_sft)
    monkeypatch.setattr(trainer.rl, "make_grpo_trainer", spy_rl)
    monkeypatch.setattr(trainer.evaluation, "evaluate", spy_eval)
    spec = JobSpec(
        job_id="ftjob-icl",
        method="reinforcement",
        base_model="tiny",
        model_source=str(tiny_model),
        training_file=rft_files[0],
        validation_file=rft_files[1],
        grader=LIKE_GRADER,
        hyperparameters={"reasoning_effort": "low"},
        openrft={
            "icl_k": 2,
            "rl": {"max_steps": 2, "early_stop": False},
            "eval": {"holdout": 0},
            "sft": {"n_epochs": 1, "samples_per_question": 0},
            "system_prompt": "Answer with the number.",
        },
    )
    sink = RecordingSink()
    assert run_job(spec, sink, ScriptedControl(), tmp_path / "w").status == "succeeded"
    assert seen["sft"] == seen["rl"]  # identical prompts per training row in both stages
    for p in seen["sft"]:
        assert p[0] == {"role": "system", "content": "Answer with the number."}
        assert [m["role"] for m in p[1:]] == ["user", "assistant", "user", "assistant", "user"]
        assert p[-1]["content"] not in (p[1]["content"], p[3]["content"])  # never its own question
    # The RL probe samples training prompts exactly as RL sees them; every evaluation, the validation prompts.
    probes = [e for e in seen["eval"] if all(p in seen["rl"] for p in e)]
    evals = [e for e in seen["eval"] if e not in probes]
    assert 1 <= len(probes) <= 2 and all(e == evals[0] for e in evals) and len(evals) >= 2  # a retry: 2
    assert any("Few-shot ICL: 2 nearest" in m for m in sink.messages())
