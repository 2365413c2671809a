"""The demo's parts: the generated task, its job configuration (accepted by the service), grading replies with
the job's grader, accuracy, and the embedded service it starts and stops."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from openrft import OpenRFT
from openrft.demo.evaluate import Graded, Score, grade, prompt
from openrft.demo.run import DemoOptions, job_options
from openrft.demo.service import EmbeddedService
from openrft.demo.task import GRADER, LABELS, RESPONSE_TEMPLATE, SYSTEM_PROMPT, all_problems, make_task
from openrft.validation import validate_file


def options(row: dict) -> dict[str, int]:
    lines = row["messages"][0]["content"].splitlines()[1:]
    return {line[0]: int(line[3:]) for line in lines}


def test_task_is_deterministic_disjoint_and_correct(tmp_path: Path) -> None:
    task = make_task(seed=3)
    assert task == make_task(seed=3) and task != make_task(seed=4)
    assert (len(task.train), len(task.validation), len(task.test)) == (100, 16, 30)
    questions = [
        r["messages"][0]["content"].splitlines()[0] for r in task.train + task.validation + task.test
    ]
    assert len(set(questions)) == len(questions)  # no held-out problem is ever trained on
    for row in task.train + task.validation + task.test:
        opts = options(row)
        assert list(opts) == list(LABELS) and len(set(opts.values())) == 4
        assert opts[row["answer"]] == int(row["value"])
        left, op, right = row["messages"][0]["content"].split("?")[0].removeprefix("What is ").split()
        expected = {"+": int(left) + int(right), "-": int(left) - int(right)}.get(op, int(left) * int(right))
        assert int(row["value"]) == expected
    for split in (task.train, task.validation, task.test):  # the right letter is spread evenly
        counts = Counter(r["answer"] for r in split)
        assert max(counts.values()) - min(counts.values()) <= 1
    paths = task.write(tmp_path)
    for name in ("train", "validation", "test"):
        report = validate_file(paths[name], "reinforcement")
        assert report.ok, report.summary()
    with pytest.raises(ValueError, match="distinct problems"):
        make_task(n_train=len(all_problems()))


def test_task_rows_are_multiple_choice_to_the_trainer() -> None:
    from trainer.data import answer_field, parse_choices

    row = make_task().train[0]
    choices = parse_choices(row["messages"][0]["content"])
    assert choices is not None and choices.labels == list(LABELS)
    assert answer_field(row, choices.labels) == "answer"  # so augmentation can shuffle and relabel


def test_job_options_are_accepted_by_the_service(client: OpenRFT, tmp_path: Path) -> None:
    paths = make_task(8, 2, 1).write(tmp_path)
    opts = DemoOptions(n_validation=2, rl_steps=8)  # evaluations every 4 RL steps
    config = job_options(opts)
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=client.files.create(paths["train"]).id,
        validation_file=client.files.create(paths["validation"]).id,
        grader=GRADER,
        hyperparameters=config["hyperparameters"],
        openrft=config["openrft"],
    )
    client.fine_tuning.jobs.cancel(job.id)
    assert (
        job.openrft and job.openrft["system_prompt"] == SYSTEM_PROMPT and job.openrft["rl"]["max_steps"] == 8
    )
    assert job.method["reinforcement"]["hyperparameters"]["eval_interval"] == 4
    assert job.openrft["response_template"] == RESPONSE_TEMPLATE
    assert job.method["reinforcement"]["grader"]["type"] == "multiple_choice"


def test_replies_are_graded_by_the_jobs_grader(client: OpenRFT) -> None:
    row = make_task().test[0]
    right, wrong = row["answer"], next(label for label in LABELS if label != row["answer"])
    replies = [
        f"{row['value']} is the sum, so\nAnswer: {right}",
        f"The correct answer is ({right}).",
        f"Answer: {wrong}",
        "I am not sure.",
    ]
    graded = grade(client, GRADER, [row] * 4, replies)
    assert [g.reward for g in graded] == [1.0, 1.0, 0.0, 0.0]
    assert [g.parsed for g in graded] == [True, True, True, False]
    score = Score(model="m", graded=graded, seconds=1.0)
    assert (score.correct, score.answered, score.accuracy) == (2, 3, 0.5)
    assert Score(model="m", graded=[], seconds=0).accuracy == 0.0
    assert Graded("x", 1.0, True) == graded[0].__class__("x", 1.0, True)
    assert prompt(row, SYSTEM_PROMPT) == [{"role": "system", "content": SYSTEM_PROMPT}, *row["messages"]]


def _processes_of(home: Path) -> list[int]:
    marker = f"OPENRFT_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_embedded_service_starts_and_stops_with_its_workers(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    service = EmbeddedService(home)
    service.start()
    try:
        with OpenRFT(api_key=service.api_key, base_url=service.base_url) as c:
            assert "smollm2-135m-instruct" in [m.id for m in c.models.list()]
        assert (home / "api_key").read_text().strip() == service.api_key  # what the CLI reads
        time.sleep(3)  # the workers are up
        assert len(_processes_of(home.resolve())) >= 3  # the API and its two workers
    finally:
        service.stop()
    time.sleep(1)
    assert _processes_of(home.resolve()) == []
    again = EmbeddedService(home)
    assert again.api_key == service.api_key  # the same key on the next run
