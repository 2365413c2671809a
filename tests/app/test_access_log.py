"""What a running service writes about its users: no secret from a URL in the access log, and a home that other
local users cannot read (the database and job data hold third-party API keys)."""

from __future__ import annotations

import stat

import httpx

from app.access_log import redact


def test_secret_query_parameters_are_redacted() -> None:
    assert redact("/v1/models?api_key=sk-123&limit=2") == "/v1/models?api_key=[redacted]&limit=2"
    assert (
        redact("/x?access_token=abc&Signature=s&name=ok")
        == "/x?access_token=[redacted]&Signature=[redacted]&name=ok"
    )
    assert (
        redact("/v1/models") == "/v1/models" and redact("/v1/files?after=file-1") == "/v1/files?after=file-1"
    )


def test_a_key_in_the_url_never_reaches_the_log_of_a_running_service(embedded_service) -> None:
    secret = "sk-leaked-" + "x" * 24
    resp = httpx.get(
        f"{embedded_service.base_url}/models?api_key={secret}",
        headers={"Authorization": f"Bearer {embedded_service.api_key}"},
        timeout=30,
    )
    assert resp.status_code == 200
    log = (embedded_service.home / "serve.log").read_text(errors="replace")
    assert "/v1/models?api_key=[redacted]" in log and secret not in log


def test_the_home_is_closed_to_other_users(app_settings) -> None:
    for d in (app_settings.home, app_settings.files_dir):
        assert stat.S_IMODE(d.stat().st_mode) & 0o077 == 0, oct(d.stat().st_mode)
