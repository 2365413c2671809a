from __future__ import annotations

import hashlib

from tests.app.conftest import assert_error, jsonl, make_key, upload
from tests.support import arithmetic_rows


def test_upload_retrieve_content_delete(client, auth):
    content = jsonl(arithmetic_rows(3))
    resp = upload(client, auth, content)
    assert resp.status_code == 200, resp.text
    obj = resp.json()
    assert obj["id"].startswith("file-")
    assert obj["object"] == "file"
    assert obj["bytes"] == len(content.encode())
    assert obj["purpose"] == "fine-tune"
    assert obj["filename"] == "train.jsonl"
    assert obj["status"] == "processed"
    assert resp.headers["x-request-id"]

    got = client.get(f"/v1/files/{obj['id']}", headers=auth)
    assert got.status_code == 200 and got.json() == obj
    body = client.get(f"/v1/files/{obj['id']}/content", headers=auth)
    assert body.status_code == 200 and body.content == content.encode()

    deleted = client.delete(f"/v1/files/{obj['id']}", headers=auth)
    assert deleted.json() == {"id": obj["id"], "object": "file", "deleted": True}
    assert_error(client.get(f"/v1/files/{obj['id']}", headers=auth), 404)
    assert_error(client.get(f"/v1/files/{obj['id']}/content", headers=auth), 404)


def test_checksum_is_stored(client, auth, app_settings):
    from sqlalchemy import select

    from core.db.models import File
    from core.db.session import session_scope

    content = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    file_id = upload(client, auth, content).json()["id"]
    with session_scope() as s:
        row = s.scalar(select(File).where(File.id == file_id))
        assert row is not None and row.sha256 == hashlib.sha256(content).hexdigest()


def test_list_pagination_order_and_purpose(client, auth):
    ids = [upload(client, auth, f'{{"n": {i}}}\n').json()["id"] for i in range(5)]
    upload(client, auth, "x\n", purpose="batch")
    page = client.get("/v1/files", headers=auth, params={"limit": 2, "purpose": "fine-tune"}).json()
    assert page["object"] == "list"
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = client.get(
        "/v1/files", headers=auth, params={"limit": 10, "after": page["last_id"], "purpose": "fine-tune"}
    ).json()
    assert [f["id"] for f in rest["data"]] == ids[::-1][2:]
    assert rest["has_more"] is False
    asc = client.get("/v1/files", headers=auth, params={"order": "asc", "purpose": "fine-tune"}).json()
    assert [f["id"] for f in asc["data"]] == ids


def test_bad_uploads(client, auth):
    assert_error(upload(client, auth, b""), 400, param="file", code="empty_file")
    assert_error(upload(client, auth, "{}\n", purpose="nonsense"), 400, param="purpose")
    no_file = client.post("/v1/files", headers=auth, data={"purpose": "fine-tune"})
    assert_error(no_file, 400, param="file")
    not_multipart = client.post("/v1/files", headers=auth, json={"purpose": "fine-tune"})
    assert_error(not_multipart, 400, param="file")
    no_purpose = client.post("/v1/files", headers=auth, files={"file": ("a.jsonl", b"{}\n")})
    assert_error(no_purpose, 400, param="purpose")


def test_upload_over_limit_is_refused_and_leaves_nothing(client, auth, app_settings, monkeypatch):
    monkeypatch.setattr(app_settings, "max_upload_bytes", 1000)
    before = sorted(p.name for p in app_settings.files_dir.rglob("*") if p.is_file())
    resp = upload(client, auth, b"x" * 5000)
    assert_error(resp, 413, param="file", code="file_too_large")
    after = sorted(p.name for p in app_settings.files_dir.rglob("*") if p.is_file())
    assert before == after


def test_non_utf8_upload_is_stored_as_is(client, auth):
    # Files are bytes; encoding problems are reported by validation when a job uses the file.
    raw = b"\xff\xfe\x00bad\n"
    obj = upload(client, auth, raw).json()
    assert client.get(f"/v1/files/{obj['id']}/content", headers=auth).content == raw


def test_files_are_invisible_to_other_orgs(client, auth):
    file_id = upload(client, auth, "{}\n").json()["id"]
    other = {"Authorization": f"Bearer {make_key()}"}
    assert_error(client.get(f"/v1/files/{file_id}", headers=other), 404)
    assert_error(client.get(f"/v1/files/{file_id}/content", headers=other), 404)
    assert_error(client.delete(f"/v1/files/{file_id}", headers=other), 404)
    assert file_id not in [f["id"] for f in client.get("/v1/files", headers=other).json()["data"]]
    # A cursor from another org is refused rather than used to page through someone else's list.
    assert_error(client.get("/v1/files", headers=other, params={"after": file_id}), 400, param="after")
