"""The retrying chat client against a fake upstream (httpx.MockTransport): what it retries, how long it
waits (Retry-After or back-off, through an injected sleep), and what its error says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from trainer.chat_client import AsyncChatClient, ChatClient, ChatError, retry_after

OK = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


class Upstream:
    """Answers the scripted responses in order (the last one repeats) and records the requests."""

    def __init__(self, *replies: httpx.Response | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply


def client(upstream: Upstream, waits: list[float], **kw: Any) -> ChatClient:
    return ChatClient(
        "http://up/v1/", api_key="sk-1", transport=httpx.MockTransport(upstream), sleep=waits.append, **kw
    )


def test_retries_503_then_succeeds() -> None:
    up, waits = (
        Upstream(httpx.Response(503, json={"error": {"message": "busy"}}), httpx.Response(200, json=OK)),
        [],
    )
    with client(up, waits) as chat:
        assert chat.create(BODY) == OK
    assert len(up.requests) == 2 and waits == [0.5]  # exponential back-off starts at backoff_s
    assert str(up.requests[0].url) == "http://up/v1/chat/completions"
    assert up.requests[0].headers["authorization"] == "Bearer sk-1"
    assert json.loads(up.requests[1].content) == BODY


def test_honours_retry_after() -> None:
    up = Upstream(
        httpx.Response(429, headers={"retry-after": "7"}, json={"error": {"message": "slow down"}}),
        httpx.Response(429, headers={"retry-after-ms": "250"}),
        httpx.Response(200, json=OK),
    )
    waits: list[float] = []
    with client(up, waits) as chat:
        assert chat.create(BODY) == OK
    assert waits == [7.0, 0.25]


def test_retry_after_forms() -> None:
    assert retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # past date
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers()) is None


def test_no_retry_on_400_and_the_error_carries_the_message() -> None:
    up, waits = Upstream(httpx.Response(400, json={"error": {"message": "unknown model 'm'"}})), []
    with client(up, waits) as chat, pytest.raises(ChatError) as err:
        chat.create(BODY)
    assert len(up.requests) == 1 and waits == []
    exc = err.value
    assert exc.status == 400 and exc.message == "unknown model 'm'" and exc.attempts == 1
    assert str(exc) == "HTTP 400 from http://up/v1/chat/completions: unknown model 'm'"


def test_gives_up_after_the_retries() -> None:
    up, waits = Upstream(httpx.Response(502, text="bad gateway")), []
    with client(up, waits, retries=3) as chat, pytest.raises(ChatError) as err:
        chat.create(BODY)
    assert len(up.requests) == 4 and waits == [0.5, 1.0, 2.0]
    assert err.value.status == 502 and err.value.attempts == 4
    assert "bad gateway" in str(err.value) and "after 4 tries" in str(err.value)


def test_connection_errors_are_retried() -> None:
    up, waits = Upstream(httpx.ConnectError("refused"), httpx.Response(200, json=OK)), []
    with client(up, waits) as chat:
        assert chat.create(BODY) == OK
    up, waits = Upstream(httpx.ConnectError("refused")), []
    with client(up, waits, retries=1) as chat, pytest.raises(ChatError) as err:
        chat.create(BODY)
    assert err.value.status is None and "ConnectError: refused" in err.value.message
    assert len(up.requests) == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json=[1]), "not a JSON object"),
        (httpx.Response(401, json={"detail": "bad key"}), "bad key"),
    ],
)
def test_bad_answers_are_not_retried(reply: httpx.Response, message: str) -> None:
    up, waits = Upstream(reply), []
    with client(up, waits) as chat, pytest.raises(ChatError, match=message):
        chat.create(BODY)
    assert len(up.requests) == 1


def run_async(up: Upstream, **kw: Any) -> tuple[Callable[[], Any], list[float]]:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(up)) as http:
            chat = AsyncChatClient("http://up/v1", http=http, sleep=sleep, **kw)
            return await chat.create(BODY)

    return lambda: asyncio.run(go()), waits


def test_async_client_shares_the_policy() -> None:
    up = Upstream(httpx.Response(503, headers={"retry-after": "2"}), httpx.Response(200, json=OK))
    go, waits = run_async(up)
    assert go() == OK and waits == [2.0]
    up = Upstream(httpx.Response(404, json={"error": {"message": "no such route"}}))
    go, waits = run_async(up, retries=5)
    with pytest.raises(ChatError, match="no such route") as err:
        go()
    assert err.value.status == 404 and len(up.requests) == 1 and waits == []


def test_teacher_failure_is_a_trainer_error_with_the_upstream_message() -> None:
    from trainer.config import Endpoint
    from trainer.interface import TrainerError
    from trainer.teachers import EndpointTeacher

    up = Upstream(httpx.Response(400, json={"error": {"message": "max_tokens is too large"}}))
    teacher = EndpointTeacher(
        Endpoint(base_url="http://teacher/v1", model="big"), stopper=None, transport=httpx.MockTransport(up)
    )
    with pytest.raises(TrainerError, match="max_tokens is too large") as err:
        teacher.sample([[{"role": "user", "content": "q"}]], n=1, temperature=0.7, max_new_tokens=8)
    assert err.value.code == "teacher_error" and "HTTP 400" in err.value.message
    assert len(up.requests) == 1  # a request the server rejects is not sent again


def test_an_engine_that_is_loading_is_waited_for_beyond_the_retries() -> None:
    """A 503 model_loading (this service's engine starting on first use) does not use up the retries: the
    client keeps asking, as the server's Retry-After says, until the model answers."""
    loading = httpx.Response(
        503,
        headers={"retry-after": "10"},
        json={"error": {"message": "The model 'm' is loading", "code": "model_loading"}},
    )
    up, waits = Upstream(*[loading] * 6, httpx.Response(200, json=OK)), []
    with client(up, waits, retries=1) as chat:
        assert chat.create(BODY) == OK
    assert len(up.requests) == 7 and waits == [10.0] * 6
    # another 503 still counts against the retries
    up, waits = Upstream(httpx.Response(503, json={"error": {"message": "down", "code": "x"}})), []
    with client(up, waits, retries=1) as chat, pytest.raises(ChatError):
        chat.create(BODY)
    assert len(up.requests) == 2
