"""client.files against a live service: every way to give a file, local validation, paging, errors."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest

from openrft import BadRequestError, FileValidationError, NotFoundError, OpenRFT, OpenRFTError
from tests.support import arithmetic_rows, write_jsonl


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_upload_from_path_bytes_file_object_and_tuple(client: OpenRFT, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(5))
    data = path.read_bytes()
    from_path = client.files.create(path, validate="reinforcement")
    from_str = client.files.create(str(path))
    from_bytes = client.files.create(data, filename="b.jsonl")
    handle = io.BytesIO(data)
    from_obj = client.files.create(handle, filename="o.jsonl", validate="reinforcement")
    from_tuple = client.files.create(("t.jsonl", data))

    assert [f.filename for f in (from_path, from_str, from_bytes, from_obj, from_tuple)] == [
        "train.jsonl",
        "train.jsonl",
        "b.jsonl",
        "o.jsonl",
        "t.jsonl",
    ]
    for f in (from_path, from_str, from_bytes, from_obj, from_tuple):
        assert f.id.startswith("file-") and f.bytes == len(data) and f.purpose == "fine-tune"
        assert client.files.content(f.id).content == data
    assert client.files.retrieve(from_obj.id).id == from_obj.id


def test_local_validation_reports_lines_and_sends_nothing(client: OpenRFT) -> None:
    before = {f.id for f in client.files.list()}
    bad = b'{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n{"messages": [{"role": "assistant", "content": "x"}]}\n'
    with pytest.raises(FileValidationError) as info:
        client.files.create(bad, filename="bad.jsonl", validate="reinforcement")
    report = info.value.report
    assert (report.examples, report.error_count) == (1, 2)
    assert [e.line for e in report.errors] == [2, 3]
    assert "line 2: invalid JSON" in str(info.value)
    assert "line 3: the last message must be from 'user'" in str(info.value)
    assert {f.id for f in client.files.list()} == before  # the upload never happened

    # the same rules the server's worker applies (shared module): supervised needs an assistant turn
    assert not client.files.validate(_jsonl(arithmetic_rows(2)), "supervised").ok
    assert client.files.validate(_jsonl(arithmetic_rows(2))).ok


def test_list_pages_automatically_and_filters_purpose(client: OpenRFT) -> None:
    ids = [client.files.create(_jsonl(arithmetic_rows(1)), filename=f"p{i}.jsonl").id for i in range(3)]
    page = client.files.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    walked = [f.id for f in page]  # iterating a page walks every later page
    assert walked[:3] == ids[::-1]  # newest first
    assert len(walked) == len(set(walked))
    pages = list(client.files.list(limit=2).iter_pages())
    assert all(len(p.data) <= 2 for p in pages) and len(pages) >= 2
    assert [f.id for f in client.files.list(order="asc", limit=2)][-3:] == ids
    assert all(f.purpose == "fine-tune" for f in client.files.list(purpose="fine-tune"))
    assert list(client.files.list(purpose="batch")) == []


def test_delete_then_not_found_with_error_fields(client: OpenRFT) -> None:
    f = client.files.create(_jsonl(arithmetic_rows(1)))
    deleted = client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(NotFoundError) as info:
        client.files.retrieve(f.id)
    err = info.value
    assert err.status_code == 404 and err.code == "file_not_found"
    assert err.type == "invalid_request_error" and f.id in err.message
    assert err.request_id and err.request_id == err.response.headers["x-request-id"]


def test_server_side_refusals(client: OpenRFT, tmp_path: Path) -> None:
    with pytest.raises(BadRequestError) as info:
        client.files.create(_jsonl(arithmetic_rows(1)), purpose="nonsense")
    assert info.value.param == "purpose"
    with pytest.raises(OpenRFTError, match="No such file"):
        client.files.create(tmp_path / f"missing-{uuid.uuid4().hex}.jsonl")


def test_local_validation_survives_deep_nesting_and_long_lines() -> None:
    """One hostile line is one error: the lines after it are still checked, and a long line is never parsed."""
    from openrft.validation import validate_stream

    good = b'{"messages": [{"role": "user", "content": "q"}]}\n'
    deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    report = validate_stream(io.BytesIO(good + deep + good), "reinforcement")
    assert (report.examples, [str(e) for e in report.errors]) == (2, ["line 2: JSON nested too deeply"])

    report = validate_stream(
        io.BytesIO(good + b"x" * 500 + b"\n" + good), "reinforcement", max_line_bytes=100
    )
    assert (report.examples, [str(e) for e in report.errors]) == (2, ["line 2: line longer than 100 bytes"])
