"""The demo's parts: the generated task, its job configuration (accepted by the service), grading replies with
the job's grader, accuracy, and the embedded service it starts and stops."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from openrft import OpenRFT
from openrft.demo.evaluate import Graded, Score, grade, prompt
from openrft.demo.run import Demo, DemoOptions, job_options
from openrft.demo.service import EmbeddedService
from openrft.demo.task import GRADER, LABELS, make_task
from openrft.validation import validate_file
from tests.support import LiveService, wait_until


def test_task_is_deterministic_disjoint_and_user_shaped(tmp_path: Path) -> None:
    task = make_task(seed=3)
    assert task == make_task(seed=3) and task != make_task(seed=4)
    assert (len(task.train), len(task.validation), len(task.test)) == (100, 16, 40)
    messages = [r["messages"][-1]["content"] for r in task.train + task.validation + task.test]
    assert len(set(messages)) == len(messages)  # no held-out message is ever trained on
    counts = Counter(r["label"] for r in task.train + task.validation + task.test)
    assert set(counts) == set(LABELS) and max(counts.values()) - min(counts.values()) <= 1  # balanced overall
    assert all({r["label"] for r in split} == set(LABELS) for split in (task.train, task.test))
    # The shape users bring: messages plus the answer in a field of the task's naming, nothing else.
    assert all(set(r) == {"messages", "label"} for r in task.train)
    paths = task.write(tmp_path)
    for name in ("train", "validation", "test"):
        report = validate_file(paths[name], "reinforcement")
        assert report.ok, report.summary()


def test_job_options_name_no_reference_and_are_accepted(client: OpenRFT, tmp_path: Path) -> None:
    paths = make_task(8, 2, 1).write(tmp_path)
    opts = DemoOptions(n_validation=2, rl_steps=8, max_minutes=20)  # evaluations every 4 RL steps
    config = job_options(opts)
    assert not {"reference", "response_template", "system_prompt"} & set(config["openrft"])
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=client.files.create(paths["train"]).id,
        validation_file=client.files.create(paths["validation"]).id,
        grader=GRADER,
        hyperparameters=config["hyperparameters"],
        openrft=config["openrft"],
    )
    client.fine_tuning.jobs.cancel(job.id)
    assert job.openrft and job.openrft["rl"]["max_steps"] == 8
    method = job.to_dict()["method"]
    assert method["reinforcement"]["hyperparameters"]["eval_interval"] == 4
    assert job.openrft["max_minutes"] == 20 and job.openrft["eval"]["at_start"] is False
    assert "max_minutes" not in job_options(DemoOptions())["openrft"]  # no budget unless asked
    assert method["reinforcement"]["grader"]["type"] == "python"


def test_replies_are_graded_by_the_jobs_grader(client: OpenRFT) -> None:
    row = make_task().test[0]
    right, wrong = row["label"], next(label for label in LABELS if label != row["label"])
    replies = [right, f"{right.capitalize()}.", wrong, f"The category is {right}."]
    graded = grade(client, GRADER, [row] * 4, replies)
    assert [g.reward for g in graded] == [1.0, 1.0, 0.0, 0.0]  # the grader wants the bare category
    score = Score(model="m", graded=graded, seconds=1.0)
    assert (score.correct, score.accuracy) == (2, 0.5)
    lo, hi = score.interval
    assert lo < 0.5 < hi and hi - lo > 0.5  # 4 replies say little
    assert Score(model="m", graded=[], seconds=0).accuracy == 0.0
    assert Graded("x", 1.0, True) == graded[0].__class__("x", 1.0, True)
    assert prompt(row, None) == row["messages"]


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
        # the API and its two workers
        wait_until(lambda: len(_processes_of(home.resolve())) >= 3, 30, what="the two workers to start")
    finally:
        service.stop()
    wait_until(lambda: _processes_of(home.resolve()) == [], 10, what="every process of the service to exit")
    again = EmbeddedService(home)
    assert again.api_key == service.api_key  # the same key on the next run


@pytest.mark.slow
def test_demo_end_to_end_on_the_tiny_model(live: LiveService, tmp_path: Path) -> None:
    """The whole demo against a running service (``--base-url``), scaled down to the tiny model."""
    out = io.StringIO()
    opts = DemoOptions(
        home=tmp_path, base_url=live.base_url, api_key=live.api_key, model="tiny-test",
        n_train=8, n_validation=2, n_test=4, rl_steps=2, answer_tokens=16, max_minutes=10, poll_interval=0.5,
    )  # fmt: skip
    result = Demo(opts, console=Console(file=out, width=200, soft_wrap=True)).run()
    text = out.getvalue()
    assert result.job.status == "succeeded", text
    assert result.ok and result.before is not None and result.after is not None
    assert result.before.model == "tiny-test" and result.after.model == result.job.fine_tuned_model
    assert len(result.before.graded) == len(result.after.graded) == 4
    assert (tmp_path / "task" / "test.jsonl").read_text().count("\n") == 4
    for line in ("Created RFT job", "Held-out accuracy", "95% interval", "What happened", "openrft chat"):
        assert line in text
    assert f"{result.after.correct}/4" in text and f"{result.before.correct}/4" in text
    # jobs.follow printed every event once, oldest first, and its bar reached the last step
    with OpenRFT(api_key=live.api_key, base_url=live.base_url) as client:
        events = list(client.fine_tuning.jobs.list_events(result.job.id))[::-1]
    positions = [text.find(e.message) for e in events]
    assert -1 not in positions and positions == sorted(positions)
    total = next(
        e.data for e in reversed(events) if e.type == "metrics" and e.data and "total_steps" in e.data
    )["total_steps"]
    assert f"step {total}/{total}" in text


def test_try_it_lines_are_whole_shell_commands_that_do_not_wrap(tmp_path) -> None:
    import shlex

    from openrft.demo.run import TRY_IT_QUESTION, try_it_lines

    model = "ft:smollm2-135m-instruct:default:demo:ftjob-abc"
    home = tmp_path / "a home"
    lines = try_it_lines(model, home=home, running_at="http://127.0.0.1:8123/v1")
    assert len(lines) == 1
    words = shlex.split(lines[0])
    assert words[:2] == [f"OPENRFT_HOME={home}", "OPENRFT_BASE_URL=http://127.0.0.1:8123/v1"]
    assert words[2:] == ["openrft", "chat", model, "-m", TRY_IT_QUESTION]
    stopped = try_it_lines(model, home=home, running_at=None)
    assert "openrft serve" in stopped[0] and shlex.split(stopped[1])[1:4] == ["openrft", "chat", model]
    assert try_it_lines(model, home=None, running_at=None) == [f"openrft chat {model} -m '{TRY_IT_QUESTION}'"]
    # printed the way the demo prints it, on a narrow terminal: one line each, never folded inside quotes
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, force_terminal=False)
    for line in lines:
        console.print(f"  {line}", markup=False, soft_wrap=True)
    assert buffer.getvalue().splitlines() == [f"  {lines[0]}"]


def test_the_demo_says_what_rl_added() -> None:
    from openrft.demo.run import rl_line

    stages = {
        "stage": "summary",
        "valid_rows": 40,
        "chosen_stage": "sft",
        "rl_start": "sft",
        "sft_valid_mean_reward": 0.8,
        "rl_valid_mean_reward": 0.825,
        "rl_minus_sft": {"mean": 0.025, "low": -0.03, "high": 0.08},
    }
    line = rl_line(stages)
    assert (
        line is not None and "SFT 0.80 -> RL 0.82" in line and "+0.03 (95% interval -0.03 to +0.08)" in line
    )
    assert "keeps the SFT model" in line
    assert "keeps the RL model" in (rl_line({**stages, "chosen_stage": "rl"}) or "")
    assert rl_line({"stage": "summary", "valid_rows": 40}) is None and rl_line(None) is None
