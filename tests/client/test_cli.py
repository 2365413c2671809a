"""The ``openrft`` client commands, run as subprocesses against the live service: results on stdout, and for
user mistakes one readable line on stderr with a non-zero exit (never a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import REPO, STRING_CHECK_GRADER, LiveService, arithmetic_rows, free_port, write_jsonl


def run_cli(
    *args: str, live: LiveService | None = None, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENRFT_")}
    if live is not None:
        base.update(OPENRFT_API_KEY=live.api_key, OPENRFT_BASE_URL=live.base_url)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "openrft.cli", *args],
        cwd=REPO, env=base, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("openrft: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(4))


def test_files_upload_and_list(live: LiveService, train_file: Path) -> None:
    up = run_cli("files", "upload", str(train_file), "--json", live=live)
    assert up.returncode == 0, up.stderr
    uploaded = json.loads(up.stdout)
    assert uploaded["filename"] == "train.jsonl" and uploaded["bytes"] == train_file.stat().st_size
    plain = run_cli("files", "upload", str(train_file), live=live)
    assert "checked as reinforcement data" in plain.stdout
    listed = run_cli("files", "list", "--json", live=live)
    assert uploaded["id"] in [f["id"] for f in json.loads(listed.stdout)]
    table = run_cli("files", "list", live=live)
    assert uploaded["id"] in table.stdout and "FILENAME" in table.stdout


def test_bad_file_is_one_line_with_the_bad_line_numbers(live: LiveService, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n{oops\n')
    line = one_error_line(run_cli("files", "upload", str(bad), live=live))
    assert "line 2: invalid JSON" in line
    missing = one_error_line(run_cli("files", "upload", str(tmp_path / "nope.jsonl"), live=live))
    assert "no such file" in missing


def test_jobs_create_list_get_and_state_changes(live: LiveService, train_file: Path, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(STRING_CHECK_GRADER))
    created = run_cli(
        "jobs", "create", "--model", "tiny-test", "--training-file", str(train_file), "--grader", f"@{grader}",
        "-H", "n_epochs=1", "-o", "rl.max_steps=500", "-o", "rl.early_stop=false", "-o", "sft.enabled=false", "--metadata", f"tag={tag}",
        "--suffix", "cli", "--json", live=live,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "uploaded" in created.stderr  # a local path is validated and uploaded first
    job = json.loads(created.stdout)
    assert job["method"]["reinforcement"]["hyperparameters"]["n_epochs"] == 1
    # A long job, so that it is still running when it is cancelled below.
    assert job["openrft"]["rl"]["max_steps"] == 500 and job["openrft"]["sft"]["enabled"] is False
    listed = run_cli("jobs", "list", "--metadata", f"tag={tag}", "--json", live=live)
    assert [j["id"] for j in json.loads(listed.stdout)] == [job["id"]]
    got = run_cli("jobs", "get", job["id"], live=live)
    assert job["id"] in got.stdout and "tiny-test" in got.stdout
    cancelled = run_cli("jobs", "cancel", job["id"], live=live)
    assert cancelled.stdout.split() == [job["id"], "cancelled"], cancelled.stderr
    again = one_error_line(run_cli("jobs", "pause", job["id"], live=live))
    assert "cannot be paused" in again and "invalid_job_state" in again
    one_error_line(run_cli("jobs", "resume", job["id"], live=live))
    events = run_cli("jobs", "events", job["id"], live=live)
    lines = events.stdout.strip().splitlines()
    # oldest first; the worker may still report its stop after the cancel event
    assert "Created fine-tuning job" in lines[0] and any("Job cancelled by the user." in x for x in lines[1:])
    followed = run_cli("jobs", "follow", job["id"], "--poll", "0.2", live=live)
    assert followed.returncode == 1 and f"{job['id']} cancelled" in followed.stdout
    assert "Job cancelled by the user." in followed.stderr
    assert "no checkpoints" in run_cli("jobs", "checkpoints", job["id"], live=live).stderr


def test_user_mistakes_are_one_line(live: LiveService, train_file: Path) -> None:
    assert "No such job" in one_error_line(run_cli("jobs", "get", "ftjob-unknown", live=live))
    bad_json = one_error_line(
        run_cli("jobs", "create", "-t", str(train_file), "--grader", "{nope", live=live)
    )
    assert "--grader: invalid JSON" in bad_json
    unknown_option = one_error_line(
        run_cli("jobs", "create", "--model", "tiny-test", "-t", "file-missing", "-g", json.dumps(STRING_CHECK_GRADER),
                live=live)
    )  # fmt: skip
    assert "No such file" in unknown_option
    bad_model = one_error_line(
        run_cli("jobs", "create", "--model", "gpt-17", "-t", str(train_file), "-g", json.dumps(STRING_CHECK_GRADER),
                live=live)
    )  # fmt: skip
    assert "unknown base model 'gpt-17'; available: " in bad_model and "tiny-test" in bad_model
    by_id = one_error_line(
        run_cli("jobs", "create", "--model", "gpt-17", "-t", "file-x", "-g", json.dumps(STRING_CHECK_GRADER),
                live=live)
    )  # fmt: skip
    assert "param=model" in by_id  # with file ids the server itself refuses the model
    missing_job = run_cli("jobs", "follow", "ftjob-unknown", live=live)
    assert "No such job" in one_error_line(missing_job)  # reported before any progress bar is drawn
    wrong_key = one_error_line(run_cli("jobs", "list", "--api-key", "sk-wrong", live=live))
    assert "Incorrect API key" in wrong_key and "401" in wrong_key
    down = one_error_line(
        run_cli("jobs", "list", "--base-url", f"http://127.0.0.1:{free_port()}/v1", live=live)
    )
    assert "could not reach" in down and "openrft serve" in down
    usage = run_cli("jobs", "frobnicate", live=live)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr and "Traceback" not in usage.stderr


def test_key_from_the_home_key_file(live: LiveService, tmp_path: Path) -> None:
    (tmp_path / "api_key").write_text(live.api_key + "\n")
    env = {"OPENRFT_HOME": str(tmp_path), "OPENRFT_BASE_URL": live.base_url}
    result = run_cli("models", "list", env=env)
    assert result.returncode == 0 and "tiny-test" in result.stdout
    no_key = one_error_line(run_cli("models", "list", env={"OPENRFT_HOME": str(tmp_path / "empty")}))
    # The CLI's words, not the SDK's api_key=...
    assert "No API key: pass --api-key or set OPENRFT_API_KEY" in no_key and "api_key=" not in no_key


def test_the_cli_finds_a_server_started_on_another_port(live: LiveService, tmp_path: Path) -> None:
    """`openrft serve --port N` records its URL in its home: the CLI of that home finds it with no
    --base-url, and when a --base-url names nothing, the hint points at the running server instead of
    telling the user to start one."""
    assert (live.home / "server_url").read_text().strip() == live.base_url
    env = {"OPENRFT_HOME": str(live.home), "OPENRFT_API_KEY": live.api_key}
    found = run_cli("models", "list", env=env)
    assert found.returncode == 0 and "tiny-test" in found.stdout, found.stderr
    wrong = f"http://127.0.0.1:{free_port()}/v1"
    hint = one_error_line(run_cli("models", "list", "--base-url", wrong, env=env))
    assert f"recorded {live.base_url}" in hint and f"--base-url {live.base_url}" in hint
    assert "start one" not in hint
    # --base-url and OPENRFT_BASE_URL still come first
    env_url = one_error_line(run_cli("models", "list", env={**env, "OPENRFT_BASE_URL": wrong}))
    assert f"Nothing answers at {wrong}" in env_url


def test_graders_run_and_validate(live: LiveService) -> None:
    grader = json.dumps(STRING_CHECK_GRADER)
    ok = run_cli("graders", "run", "-g", grader, "-s", "9", "-i", '{"answer": "9"}', live=live)
    assert ok.returncode == 0 and ok.stdout.strip() == "reward 1"
    full = run_cli("graders", "run", "-g", grader, "-s", "8", "-i", '{"answer": "9"}', "--json", live=live)
    assert json.loads(full.stdout)["reward"] == 0
    normalized = run_cli("graders", "validate", "-g", '{"type": "multiple_choice"}', live=live)
    assert json.loads(normalized.stdout)["grader"]["labels"][:2] == ["A", "B"]
    assert normalized.stderr == ""  # a grader type of this service's own prints as sent, without warnings
    bad = one_error_line(run_cli("graders", "validate", "-g", '{"type": "nonsense"}', live=live))
    assert "invalid_grader" in bad


def test_jobs_rollouts_shows_what_the_grader_rewarded(live: LiveService, train_file: Path) -> None:
    created = run_cli(
        "jobs", "create", "--model", "tiny-test", "--training-file", str(train_file), "--grader",
        json.dumps(STRING_CHECK_GRADER), "-o", "rl.max_steps=2", "-o", "sft.enabled=false",
        "-o", "rl.num_generations=2", "-o", "rl.early_stop=false", "--json", live=live,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    job_id = json.loads(created.stdout)["id"]
    early = one_error_line(run_cli("jobs", "rollouts", job_id, live=live))  # not finished yet
    assert "has no rollouts file" in early
    followed = run_cli("jobs", "follow", job_id, "--poll", "0.2", live=live)
    assert followed.returncode == 0, (followed.stdout, followed.stderr)
    assert "result files" in run_cli("jobs", "get", job_id, live=live).stdout
    job = json.loads(run_cli("jobs", "get", job_id, "--json", live=live).stdout)
    assert len(job["result_files"]) == 2, job  # metrics CSV, rollouts JSONL
    metrics = run_cli("files", "content", job["result_files"][0], live=live)
    assert metrics.returncode == 0 and metrics.stdout.startswith("step,"), metrics.stdout[:200]
    saved = train_file.parent / "rollouts.jsonl"
    written = run_cli("files", "content", job["result_files"][1], "-o", str(saved), live=live)
    assert written.returncode == 0 and f"to {saved}" in written.stderr
    assert [json.loads(line)["step"] for line in saved.read_text().splitlines()] == [1, 1, 2, 2]

    lines = json.loads(run_cli("jobs", "rollouts", job_id, "--json", live=live).stdout)
    assert sorted({r["step"] for r in lines}) == [1, 2] and len(lines) == 4  # 2 steps x 2 completions
    assert all(r["reward"] == r["outcome_reward"] and r["process_reward"] is None for r in lines)
    step2 = json.loads(run_cli("jobs", "rollouts", job_id, "--step", "2", "--json", live=live).stdout)
    assert step2 == [r for r in lines if r["step"] == 2]
    table = run_cli("jobs", "rollouts", job_id, "--last", "1", live=live).stdout.splitlines()
    assert table[0].startswith("step 2  What is") and table[1].split("\t") == [
        "REWARD", "OUTCOME", "PROCESS", "COMPLETION"
    ]  # fmt: skip
    assert len(table) == 4 and all(row.count("\t") == 3 for row in table[1:]), (
        table
    )  # one line per completion
    missing = run_cli("jobs", "rollouts", job_id, "--step", "9", live=live)
    assert missing.returncode == 1 and "no rollouts at step 9 (steps 1-2)" in missing.stderr


def test_jobs_create_checks_method_and_grader_before_uploading(live: LiveService, train_file: Path) -> None:
    before = json.loads(run_cli("files", "list", "--json", live=live).stdout)
    no_grader = one_error_line(
        run_cli("jobs", "create", "--model", "tiny-test", "-t", str(train_file), live=live)
    )
    assert "need --grader" in no_grader and "--method supervised" in no_grader  # never silently supervised
    bad_grader = {**STRING_CHECK_GRADER, "operation": "equals"}
    bad = one_error_line(
        run_cli("jobs", "create", "--model", "tiny-test", "-t", str(train_file), "-g", json.dumps(bad_grader),
                live=live)
    )  # fmt: skip
    assert bad.startswith("openrft: error: --grader (grader.operation): ") and "eq, ne" in bad
    # a grader that reads a field the rows do not have: said before the upload, with the row's fields
    typo = {**STRING_CHECK_GRADER, "reference": "{{ item.answr }}"}
    missing = one_error_line(
        run_cli("jobs", "create", "--model", "tiny-test", "-t", str(train_file), "-g", json.dumps(typo),
                live=live)
    )  # fmt: skip
    assert "{{ item.answr }}" in missing and "line 1 of" in missing and "answer, messages" in missing
    # a job the service refuses after the upload (here: an unknown option) leaves no uploaded file behind
    refused = run_cli("jobs", "create", "--model", "tiny-test", "-t", str(train_file), "-g",
                      json.dumps(STRING_CHECK_GRADER), "-o", "rl.no_such_option=1", live=live)  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "removed file-" in refused.stderr and "no_such_option" in refused.stderr.splitlines()[-1]
    assert json.loads(run_cli("files", "list", "--json", live=live).stdout) == before  # nothing was uploaded


def test_get_commands_share_one_output_style(live: LiveService, train_file: Path) -> None:
    uploaded = json.loads(run_cli("files", "upload", str(train_file), "--json", live=live).stdout)
    for args, title in (
        (("files", "get", uploaded["id"]), uploaded["id"]),
        (("models", "get", "tiny-test"), "tiny-test"),
    ):
        table = run_cli(*args, live=live)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0] == title and lines[1] == "FIELD\tVALUE", lines
        raw = json.loads(run_cli(*args, "--json", live=live).stdout)
        assert raw["id"] == title
    assert "filename\ttrain.jsonl" in run_cli("files", "get", uploaded["id"], live=live).stdout


def test_server_commands_and_the_servers_imports_never_load_the_sdk() -> None:
    """`openrft serve` (and worker, migrate, keys) and the server's `openrft.validation` import stay as light as
    before the client was built on the SDK, whose import costs about a second."""
    from openrft.cli import SERVER_COMMANDS, build_parser
    from openrft.cli_doc import _subcommands

    assert {name for name, _, _ in _subcommands(build_parser(client_commands=False))} == SERVER_COMMANDS
    code = (
        "import sys, openrft.validation, openrft.cli\n"
        "try:\n    openrft.cli.main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'openai' not in sys.modules, 'the SDK was loaded'\n"
        "openrft.cli.main(['models', '--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr  # the models command's help exits 0, having loaded the SDK
    assert "--host" in result.stdout and "{list,get,delete}" in result.stdout


def test_a_server_command_in_a_client_only_install_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client-only install carries the server's packages but not their dependencies: `openrft serve` says
    which install it needs instead of failing on an import ('No module named celery')."""
    import importlib.util

    import openrft.cli as cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "celery" else real(name, *a)
    )
    monkeypatch.setattr(cli.os, "execv", lambda *a: pytest.fail("the server was started"))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve"])
    assert "pip install 'openrft[server,train]'" in str(stopped.value) and "missing here: celery" in str(
        stopped.value
    )
