"""The endpoint grader (OpenRFT extension) against a local scoring server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.trainer.graders.servers import Recorder, Reply, serve
from trainer.graders import GraderEngine, GraderSettings


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
