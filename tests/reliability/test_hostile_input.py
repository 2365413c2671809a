"""Hostile and broken input to the API and to file validation: every answer is an OpenAI-shaped error
(with line numbers where they apply), nothing crashes, memory stays bounded. Complements tests/app and
tests/workers (the ordinary bad cases live there)."""

from __future__ import annotations

import io
import json
import tracemalloc
from typing import Any

import pytest

from openrft.validation import validate_file
from tests.app.conftest import assert_error, jsonl, upload
from tests.support import STRING_CHECK_GRADER, arithmetic_rows
from tests.workers.conftest import job_row

# ---------------------------------------------------------------------------------------------------------
# Job bodies


def _body(train: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny-test",
        "training_file": train,
        "method": {"type": "reinforcement", "reinforcement": {"grader": dict(STRING_CHECK_GRADER)}},
        **extra,
    }


@pytest.fixture
def train(client, auth) -> str:
    return str(upload(client, auth, jsonl(arithmetic_rows(4))).json()["id"])


def _with_hp(train: str, **hp: Any) -> dict[str, Any]:
    body = _body(train)
    body["method"]["reinforcement"]["hyperparameters"] = hp
    return body


def _with_grader(train: str, grader: Any) -> dict[str, Any]:
    body = _body(train)
    body["method"]["reinforcement"]["grader"] = grader
    return body


def _nested_multi(depth: int) -> dict[str, Any]:
    grader: dict[str, Any] = dict(STRING_CHECK_GRADER)
    for i in range(depth):
        grader = {"type": "multi", "name": f"m{i}", "graders": {"g": grader}, "calculate_output": "g"}
    return grader


@pytest.mark.parametrize(
    ("make", "param"),
    [
        (lambda t: _with_hp(t, n_epochs=10**30), "n_epochs"),
        (lambda t: _with_hp(t, n_epochs=2.5), "n_epochs"),
        (lambda t: _with_hp(t, batch_size=-3), "batch_size"),
        (lambda t: _with_hp(t, learning_rate_multiplier=1e300), "learning_rate_multiplier"),
        (lambda t: _with_hp(t, compute_multiplier=0), "compute_multiplier"),
        (lambda t: _with_hp(t, eval_samples=10_000), "eval_samples"),
        (lambda t: _with_hp(t, reasoning_effort="maximal"), "reasoning_effort"),
        (lambda t: _with_hp(t, no_such_knob=1), "no_such_knob"),
        (lambda t: {**_body(t), "model": "../../../etc/passwd"}, "model"),
        (lambda t: {**_body(t), "model": ""}, "model"),
        (lambda t: {**_body(t), "seed": 2**63}, "seed"),
        (lambda t: {**_body(t), "suffix": "a/b"}, "suffix"),
        (lambda t: {**_body(t), "metadata": {"k": "v" * 513}}, "metadata"),
        (lambda t: {**_body(t), "metadata": {"k": 1}}, "metadata"),
        (lambda t: {**_body(t), "training_file": ["file-a"]}, "training_file"),
        (lambda t: {**_body(t), "method": {"type": "unsupervised"}}, "method"),
        (lambda t: {**_body(t), "method": "reinforcement"}, "method"),
        (lambda t: _with_grader(t, None), "method.reinforcement.grader"),
        (lambda t: _with_grader(t, "exact"), "method.reinforcement.grader"),
        (lambda t: _with_grader(t, {"type": "python", "name": "p", "source": "def grade(:\n"}), "grader"),
        (lambda t: _with_grader(t, {"type": "python", "name": "p", "source": "x = 1\n"}), "grader"),
        (
            lambda t: _with_grader(
                t,
                {
                    "type": "multi",
                    "name": "m",
                    "graders": {"a": dict(STRING_CHECK_GRADER)},
                    "calculate_output": "a + __import__('os').system('id')",
                },
            ),
            "grader",
        ),
        (lambda t: _with_grader(t, _nested_multi(200)), "grader"),
    ],
)
def test_hostile_job_bodies_are_400_naming_the_field(client, auth, train, make, param):
    resp = client.post("/v1/fine_tuning/jobs", headers=auth, json=make(train))
    err = assert_error(resp, 400)
    assert param in (err["param"] or ""), err


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"null", "application/json"),
        (b"", "application/json"),
        (b'{"model": "tiny-test", "training_file": "f", "seed": NaN}', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b"model=tiny-test", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_job_bodies_are_400(client, auth, content, ctype):
    resp = client.post("/v1/fine_tuning/jobs", headers={**auth, "content-type": ctype}, content=content)
    assert_error(resp, 400)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_hyperparameters_are_400(client, auth, train, number):
    body = json.dumps(_with_hp(train, learning_rate_multiplier=12345)).encode().replace(b"12345", number)
    resp = client.post(
        "/v1/fine_tuning/jobs", headers={**auth, "content-type": "application/json"}, content=body
    )
    err = assert_error(resp, 400)
    assert "learning_rate_multiplier" in (err["param"] or ""), err


def test_bodies_over_the_request_limit_are_refused_unread(client, auth, app_settings):
    limit = app_settings.max_request_bytes
    # declared too large: refused from the header, before a byte of it is read
    resp = client.post(
        "/v1/fine_tuning/jobs",
        headers={**auth, "content-type": "application/json", "content-length": str(limit + 1)},
        content=b"{}",
    )
    assert_error(resp, 413, code="request_too_large")

    # streamed without a length: counted as it arrives and refused past the limit (that the server stops
    # reading there is checked over a real socket in test_streaming_limits.py)
    def body():
        yield b'{"model": "tiny-test", "metadata": {"k": "'
        for _ in range((limit >> 20) + 2):
            yield b"x" * (1 << 20)
        yield b'"}}'

    resp = client.post(
        "/v1/fine_tuning/jobs", headers={**auth, "content-type": "application/json"}, content=body()
    )
    assert_error(resp, 413)
    # uploads have their own, larger limit
    assert app_settings.max_upload_bytes > limit


# ---------------------------------------------------------------------------------------------------------
# Uploads (multipart abuse; the ordinary cases are in tests/app/test_files.py)


def test_multipart_abuse(client, auth):
    two_files = client.post(
        "/v1/files",
        headers=auth,
        files=[("file", ("a.jsonl", b"{}\n")), ("file2", ("b.jsonl", b"{}\n"))],
        data={"purpose": "fine-tune"},
    )
    assert_error(two_files, 400, param="file")
    huge_field = client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("a.jsonl", b"{}\n")},
        data={"purpose": "fine-tune", "x": "y" * (70 * 1024)},
    )
    assert_error(huge_field, 400, param="x")
    no_boundary = client.post(
        "/v1/files", headers={**auth, "content-type": "multipart/form-data"}, content=b"--x\r\n\r\n"
    )
    assert_error(no_boundary, 400, param="file")
    truncated = client.post(
        "/v1/files",
        headers={**auth, "content-type": "multipart/form-data; boundary=BOUND"},
        content=b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
    )
    assert_error(truncated, 400, param="file")


def test_upload_filename_is_only_a_label(client, auth, app_settings):
    resp = upload(client, auth, "{}\n", name="../../../../etc/passwd\x00.jsonl")
    assert resp.status_code == 200, resp.text
    obj = resp.json()
    stored = [p for p in app_settings.files_dir.rglob("*") if p.is_file() and obj["id"] in p.name]
    assert len(stored) == 1 and app_settings.files_dir in stored[0].parents
    assert client.get(f"/v1/files/{obj['id']}/content", headers=auth).content == b"{}\n"


# ---------------------------------------------------------------------------------------------------------
# JSONL that a job reads: every kind of bad row, with its line number


def _validate(new_job, content: bytes | str, **kw: Any) -> Any:
    from workers.tasks.validate_job_files_task import validate_job_files

    job_id = new_job(content, valid=False, **kw)
    outcome = validate_job_files(job_id)
    return outcome, job_row(job_id)


def test_every_kind_of_bad_row_is_reported_with_its_line(new_job):
    good = {"messages": [{"role": "user", "content": "q"}], "answer": "1"}
    lines: list[bytes] = [
        json.dumps(good).encode(),  # 1 ok
        b"\xef\xbb\xbf" + json.dumps(good).encode(),  # 2 a BOM inside the file
        b"null",  # 3
        b"42",  # 4
        b'"text"',  # 5
        json.dumps({"messages": "hi"}).encode(),  # 6
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(),  # 7
        json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),  # 8
        json.dumps({"messages": ["not an object"]}).encode(),  # 9
        json.dumps({"messages": [{"role": "user"}]}).encode(),  # 10
        json.dumps({**good, "tools": {"a": 1}}).encode(),  # 11
        b"[" * 100_000 + b"]" * 100_000,  # 12 nesting bomb
        json.dumps(good).encode() + b"\r",  # 13 CRLF is fine
    ]
    outcome, job = _validate(new_job, b"\n".join(lines) + b"\n\n\n")
    assert outcome == "failed" and job.status == "failed"
    assert job.error["code"] == "invalid_training_file" and job.error["param"] == "training_file"
    message = job.error["message"]
    # the nesting bomb stops validation at its line (json's parser recurses per level)
    assert "line 12: JSON nested too deeply" in message, message


def test_every_kind_of_bad_row_before_a_bomb(new_job):
    good = {"messages": [{"role": "user", "content": "q"}], "answer": "1"}
    lines = [
        json.dumps(good),
        "null",
        "42",
        '"text"',
        json.dumps({"messages": "hi"}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": 5}]}),
        json.dumps({"messages": ["not an object"]}),
        json.dumps({"messages": [{"role": "user"}]}),
        json.dumps({**good, "tools": {"a": 1}}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "a"}]}),
        "{" + '"a":' * 3,
        json.dumps(good) + "\r",
    ]
    outcome, job = _validate(new_job, "\n".join(lines) + "\n")
    assert outcome == "failed"
    message = job.error["message"]
    expected = {
        2: "JSON object",
        3: "JSON object",
        4: "JSON object",
        5: "'messages' must be a non-empty list",
        6: "role is 'robot'",
        7: "content must be a string",
        8: "messages[0] is not an object",
        9: "has no content",
        10: "'tools' must be a list",
        11: "last message must be from 'user'",
        12: "invalid JSON",
    }
    for line, reason in expected.items():
        assert f"line {line}: " in message and reason in message, (line, message)
    assert "line 1:" not in message and "line 13:" not in message
    assert f"{len(expected)} invalid lines" in message


def test_one_enormous_line_is_reported_without_reading_it_into_memory(new_job, app_settings, monkeypatch):
    monkeypatch.setattr(app_settings, "max_line_bytes", 1 << 20)
    good = json.dumps({"messages": [{"role": "user", "content": "q"}], "answer": "1"}).encode()
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (24 << 20) + b'"}]}'
    content = good + b"\n" + huge + b"\n" + good + b"\n"
    outcome, job = _validate(new_job, content)
    assert outcome == "failed"
    assert "line 2: line longer than 1048576 bytes" in job.error["message"], job.error
    assert "line 1" not in job.error["message"] and "line 3" not in job.error["message"]

    path = app_settings.jobs_dir / job.id / "data" / "training.jsonl"
    tracemalloc.start()
    report = validate_file(path, "reinforcement", max_line_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.examples == 2 and report.error_count == 1
    assert peak < 8 << 20, f"validation held {peak} bytes for a 24 MB line"


def test_a_hundred_thousand_lines(new_job):
    row = json.dumps({"messages": [{"role": "user", "content": "What is 1 + 1?"}], "answer": "2"})
    outcome, job = _validate(new_job, (row + "\n") * 100_000)
    assert outcome == "queued", job.error
    # ... and as many bad ones: every one is counted, the first 50 shown
    outcome, job = _validate(new_job, "not json\n" * 100_000)
    assert outcome == "failed"
    message = job.error["message"]
    assert "100000 invalid lines" in message and "and 99950 more" in message
    assert "line 50: invalid JSON" in message and "line 51:" not in message


def test_a_wrong_purpose_file_cannot_train(client, auth):
    batch = upload(client, auth, jsonl(arithmetic_rows(2)), purpose="batch").json()["id"]
    err = assert_error(client.post("/v1/fine_tuning/jobs", headers=auth, json=_body(batch)), 400)
    assert err["param"] == "training_file" and "purpose" in err["message"]


def test_empty_and_blank_only_files(client, auth, new_job):
    assert_error(upload(client, auth, b""), 400, param="file", code="empty_file")
    outcome, job = _validate(new_job, b"\n\n   \n")
    assert outcome == "failed" and "no examples" in job.error["message"]


def test_non_utf8_upload_fails_the_job_with_line_numbers(new_job):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}], "answer": "1"}).encode()
    latin1 = json.dumps({"messages": [{"role": "user", "content": "caf\u00e9"}]}, ensure_ascii=False).encode(
        "latin-1"
    )
    outcome, job = _validate(new_job, good + b"\n" + latin1 + b"\n" + "é".encode("utf-16") + b"\n")
    assert outcome == "failed"
    message = job.error["message"]
    assert "line 2: not valid UTF-8" in message and "line 3: not valid UTF-8" in message


def test_upload_is_streamed_in_chunks(client, auth):
    # a 3 MB file in one part: stored byte for byte
    data = io.BytesIO(
        (json.dumps({"messages": [{"role": "user", "content": "x" * 1000}]}) + "\n").encode() * 3000
    )
    resp = client.post(
        "/v1/files", headers=auth, files={"file": ("big.jsonl", data)}, data={"purpose": "fine-tune"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["bytes"] == len(data.getvalue())


def test_job_creation_never_reads_an_enormous_line_and_checks_the_body_first(
    client, auth, app_settings, monkeypatch
):
    """A validation file of one 24 MiB line: creating the job reads at most the line cap of it (the grader's
    item fields are checked on the lines before it; the worker's file validation reports the line), and a bad
    option is answered before any file is read."""
    monkeypatch.setattr(app_settings, "max_line_bytes", 1 << 20)
    good = json.dumps({"messages": [{"role": "user", "content": "q"}], "answer": "1"}).encode()
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (24 << 20) + b'"}], "answer": "1"}'
    valid = upload(client, auth, good + b"\n" + huge + b"\n").json()["id"]
    train = upload(client, auth, jsonl(arithmetic_rows(4))).json()["id"]
    body = _body(train, validation_file=valid)
    tracemalloc.start()
    resp = client.post("/v1/fine_tuning/jobs", headers=auth, json=body)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert resp.status_code == 200, resp.text
    assert peak < 8 << 20, f"job creation held {peak} bytes for a 24 MiB line"
    # The options are checked before the rows: a file that would fail the item-field check is not read.
    monkeypatch.setattr("app.services.jobs._check_item_fields", _must_not_read)
    refused = client.post(
        "/v1/fine_tuning/jobs", headers=auth, json={**body, "openrft": {"no_such_option": 1}}
    )
    assert_error(refused, 400)


def _must_not_read(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a file was read before the body's own checks")


def _multi(n: int) -> dict[str, Any]:
    return {
        "type": "multi",
        "graders": {f"g{i}": dict(STRING_CHECK_GRADER, name=f"g{i}") for i in range(n)},
        "calculate_output": "g0",
    }


@pytest.mark.parametrize(
    ("grader", "said"),
    [
        (
            {"type": "python", "source": "def grade(sample, item):\n    return 1.0\n" + "#" * (2 << 20)},
            "bytes",
        ),
        (_multi(100), "101 graders"),  # the multi grader and its 100
        (dict(STRING_CHECK_GRADER, input="{{ sample.output_text }}" * 5000), "5001 template variables"),
    ],
)
def test_graders_beyond_the_operators_ceilings_are_a_clear_400_everywhere(client, auth, train, grader, said):
    for path, body, param in (
        ("/v1/fine_tuning/jobs", _with_grader(train, grader), "method.reinforcement.grader"),
        ("/v1/fine_tuning/alpha/graders/validate", {"grader": grader}, "grader"),
        ("/v1/fine_tuning/alpha/graders/run", {"grader": grader, "model_sample": "4", "item": {}}, "grader"),
    ):
        err = assert_error(
            client.post(path, headers=auth, json=body), 400, param=param, code="invalid_grader"
        )
        assert said in err["message"] and "OPENRFT_MAX_" in err["message"], err
    assert (
        client.post(
            "/v1/fine_tuning/alpha/graders/validate", headers=auth, json={"grader": _multi(8)}
        ).status_code
        == 200
    )  # a multi grader of ordinary size passes


@pytest.mark.parametrize(
    ("openrft", "param"),
    [
        ({"rl": {"max_steps": 100000}}, "openrft.rl.max_steps"),
        ({"system_prompt": "x" * (1 << 20)}, "openrft.system_prompt"),
    ],
)
def test_a_jobs_compute_beyond_the_operators_ceilings_is_a_clear_400(client, auth, train, openrft, param):
    err = assert_error(
        client.post("/v1/fine_tuning/jobs", headers=auth, json=_body(train, openrft=openrft)),
        400,
        param=param,
    )
    assert "OPENRFT_MAX_" in err["message"]
