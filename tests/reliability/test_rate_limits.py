"""Per-key rate limits on the expensive routes: OpenAI's headers before they bite, 429 + retry-after when
they do, shared by every API process through Redis, and still enforced (per process) when Redis is away."""

from __future__ import annotations

import pytest

from tests.app.conftest import assert_error, make_key

LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


@pytest.fixture
def limited(app_settings, monkeypatch):
    from app.ratelimit import get_rate_limiter

    get_rate_limiter.cache_clear()
    monkeypatch.setattr(app_settings, "rate_limit_jobs_per_minute", 3)
    monkeypatch.setattr(app_settings, "rate_limit_chat_per_minute", 2)
    yield
    get_rate_limiter.cache_clear()


def test_job_creation_is_limited_per_key_with_openai_headers(client, limited):
    auth = {"Authorization": f"Bearer {make_key()}"}
    seen = []
    for _ in range(3):
        # an invalid body still counts (and still carries the headers)
        resp = client.post("/v1/fine_tuning/jobs", headers=auth, json={"model": "nope"})
        assert resp.status_code == 400
        seen.append(tuple(resp.headers.get(h) for h in LIMIT_HEADERS))
    assert [s[0] for s in seen] == ["3", "3", "3"]
    assert [s[1] for s in seen] == ["2", "1", "0"]
    assert seen[0][2] == "20s" and seen[2][2].endswith("s")  # time until the bucket is full again

    refused = client.post("/v1/fine_tuning/jobs", headers=auth, json={"model": "nope"})
    err = assert_error(refused, 429, code="rate_limit_exceeded")
    assert err["type"] == "requests" and "3 per minute" in err["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert 0 < int(refused.headers["retry-after-ms"]) <= 20_000
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"

    # another key of the same organization or another one is not affected; cheap routes carry no limit
    other = {"Authorization": f"Bearer {make_key()}"}
    assert client.post("/v1/fine_tuning/jobs", headers=other, json={"model": "nope"}).status_code == 400
    listed = client.get("/v1/fine_tuning/jobs", headers=auth)
    assert listed.status_code == 200 and "x-ratelimit-limit-requests" not in listed.headers


def test_chat_completions_are_limited(client, limited):
    auth = {"Authorization": f"Bearer {make_key()}"}
    body = {"model": "ft:none:x:y:ftjob-none", "messages": [{"role": "user", "content": "hi"}]}
    first = client.post("/v1/chat/completions", headers=auth, json=body)
    assert first.headers["x-ratelimit-limit-requests"] == "2", first.headers
    client.post("/v1/chat/completions", headers=auth, json=body)
    assert_error(client.post("/v1/chat/completions", headers=auth, json=body), 429)


def test_the_bucket_refills_smoothly(monkeypatch):
    import app.ratelimit as rl

    now = [1000.0]
    monkeypatch.setattr(rl.time, "monotonic", lambda: now[0])
    buckets = rl.LocalBuckets()
    assert all(buckets.hit("k", 60).allowed for _ in range(60))  # a full minute's burst
    refused = buckets.hit("k", 60)
    assert not refused.allowed and refused.retry_after_ms == 1000 and refused.reset_ms == 60_000
    now[0] += 1.0
    again = buckets.hit("k", 60)
    assert again.allowed and again.remaining == 0
    now[0] += 61.0
    full = buckets.hit("k", 60)
    assert full.allowed and full.remaining == 59 and full.reset_ms == 1000


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (120, "120ms"), (1000, "1s"), (1500, "1.5s"), (360_000, "6m0s"), (3_723_000, "1h2m3s")],
)
def test_reset_format_matches_openai(ms, text):
    from app.ratelimit import format_duration

    assert format_duration(ms) == text


def test_an_unreachable_redis_falls_back_to_per_process_limits():
    from app.ratelimit import RateLimiter
    from tests.support import free_port

    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0")
    decisions = [limiter.hit("jobs", "key_1", 2) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]


@pytest.mark.slow
def test_limits_are_shared_by_api_processes_through_redis(make_service, pg_url, private_redis):
    """Two API processes on one Redis: the limit is per key across both; with Redis gone, each process
    keeps limiting on its own and nothing fails."""
    import httpx

    svc = make_service(
        database_url=pg_url, redis_url=private_redis.url, extra={"OPENRFT_RATE_LIMIT_JOBS_PER_MINUTE": "4"}
    )
    svc.start_api()
    first_port, second_port = svc.port, svc.start_extra_api("api-2")
    auth = {"Authorization": f"Bearer {svc.api_key}"}
    urls = [f"http://127.0.0.1:{p}/v1/fine_tuning/jobs" for p in (first_port, second_port)]

    answers = []
    for i in range(5):
        resp = httpx.post(urls[i % 2], headers=auth, json={"model": "nope"}, timeout=30)
        answers.append((resp.status_code, resp.headers.get("x-ratelimit-remaining-requests")))
    assert answers == [(400, "3"), (400, "2"), (400, "1"), (400, "0"), (429, "0")], answers

    private_redis.stop()
    try:
        codes = [
            httpx.post(u, headers=auth, json={"model": "nope"}, timeout=30).status_code for u in urls * 3
        ]
        # per process now: each allows its own 4 per minute, nothing is a 5xx
        assert codes == [400] * 6, codes
        codes = [
            httpx.post(urls[0], headers=auth, json={"model": "nope"}, timeout=30).status_code
            for _ in range(2)
        ]
        assert codes == [400, 429], codes
    finally:
        private_redis.start()


def test_uploads_and_grader_validation_are_limited(client, app_settings, monkeypatch):
    from app.ratelimit import get_rate_limiter
    from tests.app.conftest import upload

    get_rate_limiter.cache_clear()
    monkeypatch.setattr(app_settings, "rate_limit_files_per_minute", 2)
    monkeypatch.setattr(app_settings, "rate_limit_graders_per_minute", 1)
    try:
        auth = {"Authorization": f"Bearer {make_key()}"}
        for _ in range(2):
            assert upload(client, auth, '{"x": 1}\n').status_code == 200
        assert_error(upload(client, auth, '{"x": 1}\n'), 429, code="rate_limit_exceeded")
        grader = {"type": "string_check", "name": "g", "input": "a", "reference": "a", "operation": "eq"}
        validate = "/v1/fine_tuning/alpha/graders/validate"
        assert client.post(validate, headers=auth, json={"grader": grader}).status_code == 200
        assert_error(client.post(validate, headers=auth, json={"grader": grader}), 429)
    finally:
        get_rate_limiter.cache_clear()


def test_an_organizations_uploads_stop_at_its_storage_quota(client, app_settings, monkeypatch):
    from tests.app.conftest import upload

    monkeypatch.setattr(app_settings, "max_org_storage_bytes", 1000)
    auth = {"Authorization": f"Bearer {make_key()}"}
    row = '{"messages": [{"role": "user", "content": "q"}]}\n'
    first = upload(client, auth, row * 10)  # 500 bytes
    assert first.status_code == 200
    err = assert_error(upload(client, auth, row * 11), 400, code="storage_quota_exceeded")  # 500 + 550
    assert "1000 bytes" in err["message"]
    listed = client.get("/v1/files", headers=auth).json()["data"]
    assert [f["id"] for f in listed] == [first.json()["id"]]  # the refused upload is kept nowhere
    assert (
        upload(client, {"Authorization": f"Bearer {make_key()}"}, row * 11).status_code == 200
    )  # per organization
    # Deleting a file frees its share.
    assert client.delete(f"/v1/files/{first.json()['id']}", headers=auth).status_code == 200
    assert upload(client, auth, row * 11).status_code == 200
