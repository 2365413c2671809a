from __future__ import annotations

import io
import json
import uuid
from typing import Any

from fastapi.testclient import TestClient


def make_key(org: str | None = None) -> str:
    from app import auth
    from core.db.session import session_scope

    key = auth.generate_key()
    with session_scope() as s:
        auth.add_key(s, auth.get_or_create_org(s, org or f"org-{uuid.uuid4().hex[:12]}"), key)
    return key


def upload(
    client: TestClient,
    auth: dict[str, str],
    content: bytes | str,
    *,
    purpose: str = "fine-tune",
    name: str = "train.jsonl",
) -> Any:
    data = content.encode() if isinstance(content, str) else content
    return client.post(
        "/v1/files", headers=auth, files={"file": (name, io.BytesIO(data))}, data={"purpose": purpose}
    )


def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def assert_error(
    resp: Any, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    assert resp.headers.get("x-request-id")
    return err
