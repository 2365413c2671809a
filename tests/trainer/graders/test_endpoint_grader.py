"""The endpoint grader (OpenRFT extension) against a local scoring server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.trainer.graders.servers import Recorder, Reply, serve
from trainer.graders import GraderEngine, GraderSettings
from trainer.graders import endpoint as endpoint_module
from trainer.graders.errors import GradingError


def scorer(path: str, body: dict[str, Any], headers: dict[str, str], rec: Recorder) -> Reply:
    text = body["sample"]["output_text"]
    if path == "/plain":
        return 200, 0.25
    if path == "/object":
        return 200, {"score": 1.0 if text == body["item"]["answer"] else 0.0, "note": headers.get("x-token")}
    if path == "/slow":
        time.sleep(2)
        return 200, 1.0
    if path == "/error":
        return 500, {"error": "boom"}
    if path == "/nonsense":
        return 200, {"verdict": "yes"}
    if path == "/huge":
        return 200, b"[" + b"1," * 600_000 + b"1]"
    return 404, {}


@pytest.fixture(scope="module")
def scoring() -> Iterator[tuple[str, Recorder]]:
    with serve(scorer) as served:
        yield served


def endpoint(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "endpoint", "name": "remote", "url": url, **extra}


def test_posts_sample_and_item_and_reads_the_score(
    scoring: tuple[str, Recorder], settings: GraderSettings
) -> None:
    url, rec = scoring
    with GraderEngine(endpoint(url + "/object", headers={"x-token": "t1"}), settings) as engine:
        result = engine.grade_batch(["Paris", '{"city": "Lyon"}'], [{"answer": "Paris"}, {"answer": "Paris"}])
    assert result.scores == [1.0, 0.0] and not any(result.sample_errors)
    sent = sorted(
        (r for r in rec.requests if r["path"] == "/object"), key=lambda r: r["body"]["sample"]["output_text"]
    )
    assert sent[0]["body"]["item"] == {"answer": "Paris"}
    assert sent[0]["headers"]["x-token"] == "t1"
    assert sent[1]["body"]["sample"]["output_json"] == {"city": "Lyon"}  # the full sample namespace travels
    with GraderEngine(endpoint(url + "/plain"), settings) as engine:
        assert engine.grade_batch(["x"], [{}]).scores == [0.25]


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/error", "other_error"),
        ("/nonsense", "other_error"),
        ("/huge", "other_error"),
        ("/slow", "unresponsive_reward_error"),
    ],
)
def test_failures_score_zero(
    path: str, error: str, scoring: tuple[str, Recorder], settings: GraderSettings
) -> None:
    spec = endpoint(scoring[0] + path, timeout_s=0.5)
    start = time.perf_counter()
    with GraderEngine(spec, settings) as engine:
        result = engine.grade_batch(["x"], [{}])
    assert result.scores == [0.0] and result.sample_errors == [[error]]
    assert time.perf_counter() - start < 1.9  # the timeout cut the slow call short


def test_unreachable_endpoint(settings: GraderSettings) -> None:
    with GraderEngine(endpoint("http://127.0.0.1:9/grade"), settings) as engine:
        result = engine.grade_batch(["x"], [{}])
    assert result.scores == [0.0] and result.sample_errors == [["unresponsive_reward_error"]]


def test_private_addresses_are_refused_by_default(scoring: tuple[str, Recorder]) -> None:
    url, rec = scoring
    before = len(rec.requests)
    with GraderEngine(endpoint(url + "/plain"), GraderSettings()) as engine:
        result = engine.grade_batch(["x"], [{}])
    assert result.scores == [0.0] and result.sample_errors == [["other_error"]]
    assert "non-public address 127.0.0.1" in result.error_details[0]
    assert len(rec.requests) == before  # nothing was sent


def test_the_request_goes_to_the_address_that_was_checked(
    scoring: tuple[str, Recorder], settings: GraderSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names are looked up once, by the grader: ``.invalid`` never resolves (RFC 6761), so the calls can only
    succeed if the connection goes to the address the grader looked up and checked, not to a second lookup's
    (which DNS rebinding could point at a private address). Two names on one address (a CDN) keep their own
    Host header and their own connection pool (a TLS connection is checked for one name only)."""
    url, rec = scoring
    port = int(url.rsplit(":", 1)[1])
    asked: list[tuple[str, int]] = []

    async def fake_lookup(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    monkeypatch.setattr(endpoint_module, "lookup", fake_lookup)
    spec = {
        "type": "multi",
        "graders": {
            "a": endpoint(f"http://a.invalid:{port}/plain", headers={"HOST": "evil"}),
            "b": endpoint(f"http://b.invalid:{port}/object"),
        },
        "calculate_output": "a + b",
    }
    before = len(rec.requests)
    with GraderEngine(spec, settings) as engine:
        result = engine.grade_batch(["x"], [{"answer": "x"}])
        assert engine._runtime is not None
        pools = sorted(k for k in engine._runtime._clients if k.startswith("endpoint:"))
    assert result.scores == [1.25] and not any(result.sample_errors), result.error_details
    assert sorted(asked) == [("a.invalid", port), ("b.invalid", port)]
    hosts = {r["path"]: r["headers"]["host"] for r in rec.requests[before:]}
    assert hosts == {
        "/plain": f"a.invalid:{port}",
        "/object": f"b.invalid:{port}",
    }  # the names, not the address
    assert pools == ["endpoint:a.invalid", "endpoint:b.invalid"]


@pytest.mark.parametrize(
    ("url", "addr", "target", "host", "extensions"),
    [
        ("https://grader.example/score", "93.184.215.14", "https://93.184.215.14/score", "grader.example",
         {"sni_hostname": "grader.example"}),
        ("http://u:p%40x@grader.example:8080/s?q=1", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
         "http://u:p%40x@[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8080/s?q=1", "grader.example:8080", {}),
    ],
)  # fmt: skip
def test_pinned_urls_keep_the_name_for_host_and_tls(
    url: str, addr: str, target: str, host: str, extensions: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_lookup(name: str, port: int) -> list[str]:
        return [addr]

    monkeypatch.setattr(endpoint_module, "lookup", fake_lookup)
    assert asyncio.run(endpoint_module.pin(url, allow_private=False)) == (target, {"host": host}, extensions)


def test_one_private_address_among_public_ones_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_lookup(name: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    monkeypatch.setattr(endpoint_module, "lookup", fake_lookup)
    with pytest.raises(GradingError, match=r"non-public address 10\.0\.0\.7"):
        asyncio.run(endpoint_module.pin("https://grader.example/", allow_private=False))
    # The operator's list (OPENRFT_PRIVATE_URL_HOSTS) lets that one host through, by name or name:port.
    for allowed in (["grader.example"], ["grader.example:443"]):
        target, _, _ = asyncio.run(endpoint_module.pin("https://grader.example/", False, allowed))
        assert target == "https://93.184.215.14/"
    # A malformed port is the grader's error, not a crash.
    with pytest.raises(GradingError, match="no valid port"):
        asyncio.run(endpoint_module.pin("http://grader.example:99999x/", allow_private=False))
