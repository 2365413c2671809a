"""The client's retries (408/409/429/5xx, connection errors and timeouts, ``retry-after`` honoured) and its
exception per status code: the SDK's, checked through ``OpenRFT`` against a scripted local server (a live
service does not fail on demand), with what this package adds on top: whole-file re-uploads, the CLI's one-line
errors, and waiting out a loading model."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest

from openrft import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncOpenRFT,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    OpenRFT,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from openrft._exceptions import status_line
from tests.client.fake_server import MODEL, Reply, error, fake_server
from tests.support import free_port

FILE = {"id": "file-1", "object": "file", "bytes": 3, "created_at": 1, "filename": "a.jsonl",
        "purpose": "fine-tune", "status": "processed"}  # fmt: skip


def client_for(url: str, **kw: object) -> OpenRFT:
    return OpenRFT(api_key="sk-test", base_url=url, **kw)  # type: ignore[arg-type]


def test_429_waits_retry_after_ms_then_succeeds() -> None:
    with fake_server([error(429, "slow down", **{"retry-after-ms": "300"}), Reply(200, MODEL)]) as srv:
        model = client_for(srv.base_url).models.retrieve("m")
    assert model.id == "m"
    first, second = srv.seen
    assert second.at - first.at >= 0.3
    assert (
        first.headers["x-stainless-retry-count"] == "0" and second.headers["x-stainless-retry-count"] == "1"
    )
    assert second.headers["authorization"] == "Bearer sk-test"


def test_retry_after_seconds_header_and_each_retryable_status() -> None:
    replies = [error(503, **{"retry-after": "0.2"}), error(408), error(409), Reply(200, MODEL)]
    with fake_server(replies) as srv:
        assert client_for(srv.base_url, max_retries=3).models.retrieve("m").id == "m"
    assert len(srv.seen) == 4
    assert srv.seen[1].at - srv.seen[0].at >= 0.2


def test_gives_up_after_max_retries_with_the_last_error() -> None:
    with (
        fake_server([error(503), error(502), error(500, "boom")]) as srv,
        pytest.raises(InternalServerError) as info,
    ):
        client_for(srv.base_url, max_retries=2).models.retrieve("m")
    assert len(srv.seen) == 3 and info.value.status_code == 500 and info.value.message.endswith("boom")


def test_x_should_retry_overrides_the_status() -> None:
    with fake_server([error(503, **{"x-should-retry": "false"})]) as srv, pytest.raises(InternalServerError):
        client_for(srv.base_url).models.retrieve("m")
    assert len(srv.seen) == 1
    with fake_server([error(400, **{"x-should-retry": "true"}), Reply(200, MODEL)]) as srv:
        client_for(srv.base_url).models.retrieve("m")
    assert len(srv.seen) == 2


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, __import__("openrft").NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (418, APIStatusError),
    ],
)
def test_one_exception_class_per_status(status: int, cls: type[APIStatusError]) -> None:
    body = {"error": {"message": "nope", "type": "t", "param": "p", "code": "c"}}
    with fake_server([Reply(status, body, {"x-request-id": "req_1"})]) as srv, pytest.raises(cls) as info:
        client_for(srv.base_url, max_retries=0).models.retrieve("m")
    err = info.value
    assert type(err) is cls
    assert (err.status_code, err.message, err.type, err.param, err.code, err.request_id) == (
        status, f"Error code: {status} - nope", "t", "p", "c", "req_1"
    )  # fmt: skip
    assert status_line(err) == f"nope ({status}, c, param=p, request req_1)"  # what the CLI prints


def test_non_json_error_body_still_raises_a_readable_error() -> None:
    with (
        fake_server([Reply(502, raw=b"<html>Bad gateway</html>", content_type="text/html")]) as srv,
        pytest.raises(InternalServerError) as info,
    ):
        client_for(srv.base_url, max_retries=0).models.retrieve("m")
    assert status_line(info.value) == "<html>Bad gateway</html> (502)"


def test_connection_error_is_retried_then_raised() -> None:
    port = free_port()  # nothing listens here
    started = time.monotonic()
    with pytest.raises(APIConnectionError) as info:
        client_for(f"http://127.0.0.1:{port}/v1", max_retries=1).models.list()
    assert time.monotonic() - started >= 0.375  # one backoff happened
    assert str(info.value.request.url) == f"http://127.0.0.1:{port}/v1/models"


def test_timeout_is_retried_then_raised() -> None:
    with (
        fake_server([Reply(200, MODEL, delay=1.0), Reply(200, MODEL, delay=1.0)]) as srv,
        pytest.raises(APITimeoutError),
    ):
        client_for(srv.base_url, max_retries=1, timeout=0.3).models.retrieve("m")
    assert len(srv.seen) == 2


def test_retried_upload_resends_the_whole_file(tmp_path: Path) -> None:
    content = b'{"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}\n'
    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    stream = io.BytesIO(content)
    stream.seek(0, io.SEEK_END)  # a file object is sent whole on every attempt, wherever it was left
    for source in (path, stream, content):
        with fake_server([error(503), Reply(200, FILE)]) as srv:
            f = client_for(srv.base_url).files.create(source, filename="t.jsonl")
        assert f.id == "file-1"
        assert len(srv.seen) == 2
        for attempt in srv.seen:
            assert attempt.method == "POST" and attempt.path == "/v1/files"
            assert content in attempt.body
            assert b'name="purpose"' in attempt.body and b"fine-tune" in attempt.body


def test_async_client_retries_the_same_way(tmp_path: Path) -> None:
    async def run() -> None:
        with fake_server([error(429, **{"retry-after-ms": "200"}), Reply(200, MODEL)]) as srv:
            async with AsyncOpenRFT(api_key="k", base_url=srv.base_url) as c:
                assert (await c.models.retrieve("m")).id == "m"
            assert len(srv.seen) == 2 and srv.seen[1].at - srv.seen[0].at >= 0.2
        path = tmp_path / "a.jsonl"
        path.write_bytes(b'{"messages": [{"role": "user", "content": "x"}]}\n')
        with fake_server([error(500), Reply(200, FILE)]) as srv:
            async with AsyncOpenRFT(api_key="k", base_url=srv.base_url) as c:
                await c.files.create(path)
            assert all(path.read_bytes() in s.body for s in srv.seen) and len(srv.seen) == 2
        with fake_server([error(503), error(503)]) as srv:
            async with AsyncOpenRFT(api_key="k", base_url=srv.base_url, max_retries=1) as c:
                with pytest.raises(InternalServerError):
                    await c.models.retrieve("m")
        async with AsyncOpenRFT(
            api_key="k", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0
        ) as c:
            with pytest.raises(APIConnectionError):
                await c.models.retrieve("m")

    asyncio.run(run())


def test_retry_while_loading_waits_out_a_cold_model() -> None:
    from openrft._model_loading import retry_while_loading

    def loading() -> Reply:
        body = {
            "error": {
                "message": "The model 'm' is loading",
                "type": "service_unavailable_error",
                "code": "model_loading",
            }
        }
        return Reply(503, body, {"retry-after": "0.3"})

    notes: list[str] = []
    with fake_server([loading(), loading(), loading(), Reply(200, MODEL)]) as srv:
        client = client_for(srv.base_url, max_retries=0)
        model = retry_while_loading(lambda: client.models.retrieve("m"), timeout=10, on_wait=notes.append)
    assert model.id == "m" and len(notes) == 3 and srv.seen[3].at - srv.seen[0].at >= 0.9
    with (
        fake_server([error(503, "engine down")]) as srv,
        pytest.raises(InternalServerError, match="engine down"),
    ):
        retry_while_loading(lambda: client_for(srv.base_url, max_retries=0).models.retrieve("m"), timeout=10)
    with fake_server([loading()] * 5) as srv, pytest.raises(InternalServerError, match="loading"):
        retry_while_loading(lambda: client_for(srv.base_url, max_retries=0).models.retrieve("m"), timeout=0.5)


def test_the_packages_names_are_the_sdks_classes() -> None:
    """Every exported name resolves (they load on first use); the errors are the SDK's own classes, so code that
    catches ``openai.NotFoundError`` catches this client's too."""
    import openai

    import openrft

    values = {name: getattr(openrft, name) for name in openrft.__all__}
    assert set(openrft.__all__) <= set(dir(openrft))
    for name in (
        "NotFoundError",
        "RateLimitError",
        "APIConnectionError",
        "APITimeoutError",
        "APIStatusError",
    ):
        assert values[name] is getattr(openai, name)
    assert values["OpenRFTError"] is openai.OpenAIError and issubclass(
        values["FileValidationError"], openai.OpenAIError
    )
    assert issubclass(values["OpenRFT"], openai.OpenAI) and issubclass(
        values["AsyncOpenRFT"], openai.AsyncOpenAI
    )
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        openrft.nothing  # noqa: B018
