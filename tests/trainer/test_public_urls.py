"""User URLs (a job's teacher, process reward judge, rollout server) reach public addresses only: the attack of a
job pointed at a listener on the service's own machine, and what its error may say."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.trainer.graders.servers import serve
from trainer import public_urls
from trainer.chat_client import ChatClient, ChatError
from trainer.config import Endpoint
from trainer.interface import TrainerError
from trainer.public_urls import PrivateAddressError, PublicTransport, literal_refusal
from trainer.teachers import EndpointTeacher

SECRET = "internal-only: db password hunter2"


@pytest.fixture
def internal_listener() -> Iterator[tuple[str, Callable[[], list[str]]]]:
    """A service on this machine that answers every POST with a 500 whose body is a secret; returns its base URL
    and the paths it was asked for."""
    with serve(lambda path, body, headers, rec: (500, SECRET.encode())) as (url, recorder):
        yield url + "/v1", lambda: [r["path"] for r in recorder.requests]


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://localhost:8000/v1", "this machine"),
        ("http://api.localhost/v1", "this machine"),
        ("http://127.0.0.1:8000/v1", "not a public address"),
        ("http://10.0.0.5/v1", "not a public address"),
        ("http://169.254.169.254/latest", "not a public address"),
        ("http://[::1]:9000/v1", "not a public address"),
        ("http://host:notaport/v1", "no valid port"),
        ("https://api.openai.com/v1", None),  # a name: the request itself checks what it resolves to
        ("http://93.184.215.14/v1", None),
    ],
)
def test_literal_refusals_at_job_creation(url: str, refused: str | None) -> None:
    why = literal_refusal(url)
    assert (why is None) if refused is None else (why is not None and refused in why), why


def test_the_operators_list_lets_a_private_host_through() -> None:
    assert literal_refusal("http://10.0.0.5:8000/v1", ["10.0.0.5"]) is None
    assert literal_refusal("http://vllm.internal:8000/v1", ["vllm.internal:8000"]) is None
    assert literal_refusal("http://127.0.0.1:8000/v1", ["127.0.0.1:9000"]) is not None  # another port


def test_a_loopback_listener_is_never_called_and_its_reply_never_shown(internal_listener: Any) -> None:
    base_url, seen = internal_listener
    with ChatClient.for_user_url(base_url, retries=0) as client, pytest.raises(ChatError) as caught:
        client.create({"model": "m", "messages": []})
    assert "non-public address 127.0.0.1" in str(caught.value)
    assert seen() == []  # refused before any connection


def test_an_allowed_hosts_error_carries_its_status_not_its_body(internal_listener: Any) -> None:
    base_url, seen = internal_listener
    with (
        ChatClient.for_user_url(base_url, retries=0, allowed_hosts=["127.0.0.1"]) as client,
        pytest.raises(ChatError) as caught,
    ):
        client.create({"model": "m", "messages": []})
    assert seen() == ["/v1/chat/completions"] and caught.value.status == 500
    assert SECRET not in str(caught.value) and "Internal Server Error" in str(caught.value)
    # The service's own clients (model graders calling this service) still quote the upstream's message.
    with ChatClient(base_url, retries=0) as own, pytest.raises(ChatError) as quoted:
        own.create({"model": "m", "messages": []})
    assert SECRET in str(quoted.value)


def test_a_teacher_pointed_at_the_services_network_fails_the_job_without_its_reply(
    internal_listener: Any,
) -> None:
    base_url, seen = internal_listener
    teacher = EndpointTeacher(Endpoint(base_url=base_url, model="m"), stopper=None)
    with pytest.raises(TrainerError) as caught:
        teacher.sample([[{"role": "user", "content": "q"}]], n=1, temperature=0.7, max_new_tokens=8)
    assert caught.value.code == "teacher_error" and "non-public address" in str(caught.value)
    assert SECRET not in str(caught.value) and seen() == []


def test_a_public_name_is_sent_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host is resolved once and the connection goes to that address, the name kept in Host and the TLS
    server name: a DNS answer that changes after the check cannot redirect the request."""
    import ipaddress

    sent: list[httpx.Request] = []

    def answer(self: Any, request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"choices": []}, request=request)

    answers = iter([["93.184.215.14"], ["127.0.0.1"]])  # the second lookup is a rebinding attack
    monkeypatch.setattr(
        public_urls, "resolve", lambda host, port: [ipaddress.ip_address(a) for a in next(answers)]
    )
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", answer)
    with httpx.Client(transport=PublicTransport()) as client:
        client.post("https://judge.example:8443/v1/chat/completions", json={})
        with pytest.raises(PrivateAddressError, match=r"127\.0\.0\.1"):
            client.post("https://judge.example:8443/v1/chat/completions", json={})
    (request,) = sent
    assert request.url.host == "93.184.215.14" and request.url.port == 8443
    assert request.headers["host"] == "judge.example:8443"
    assert request.extensions["sni_hostname"] == "judge.example"
