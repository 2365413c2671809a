"""Per-key rate limits on the expensive routes, with OpenAI's headers.

Each limit is a GCRA (generic cell rate algorithm) bucket: ``limit`` requests per minute, refilled
smoothly, bursts up to ``limit``. The state of one bucket is a single timestamp (the theoretical arrival
time), so it lives in one Redis key updated by a Lua script (atomic, on Redis' clock: every API process
shares it) when ``REDIS_URL`` is set, and in a dict otherwise. If Redis is unreachable the process falls
back to its own buckets rather than failing requests.

Use it as a route dependency after authentication::

    @router.post("/chat/completions", dependencies=[Depends(RateLimited("chat"))])

Every response of such a route (errors included) carries ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests`` and ``x-ratelimit-reset-requests``; a refused request is a 429 with
``retry-after`` (seconds) and ``retry-after-ms``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import PrincipalDep
from app.errors import APIError
from core.settings import Settings, get_settings

log = logging.getLogger("openrft.ratelimit")

PERIOD_MS = 60_000
_STATE_KEY = "ratelimit_headers"
_REDIS_KEY = "openrft:ratelimit:{name}:{key}"

# KEYS[1]: the bucket; ARGV: emission interval (ms), period (ms). Returns {allowed, debt_ms} where debt is
# how far the bucket's theoretical arrival time is ahead of now after this request (or before, if refused).
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > period then
  return {0, math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, math.ceil(new_tat - now)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_ms: int
    """Time until the bucket is full again."""
    retry_after_ms: int
    """Time until the next request would be allowed (0 when allowed)."""


def decide(limit: int, allowed: bool, debt_ms: float) -> Decision:
    interval = PERIOD_MS / limit
    if allowed:
        remaining = max(0, math.floor((PERIOD_MS - debt_ms) / interval))
        return Decision(True, limit, remaining, math.ceil(debt_ms), 0)
    retry = max(1, math.ceil(debt_ms + interval - PERIOD_MS))
    return Decision(False, limit, 0, math.ceil(debt_ms), retry)


class LocalBuckets:
    """In-process GCRA buckets (one API process, or the fallback while Redis is away)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int) -> Decision:
        interval = PERIOD_MS / limit
        now = time.monotonic() * 1000
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            new_tat = tat + interval
            if new_tat - now > PERIOD_MS:
                return decide(limit, False, tat - now)
            self._tat[key] = new_tat
            if len(self._tat) > 10_000:  # forget full buckets: they hold no information
                self._tat = {k: v for k, v in self._tat.items() if v > now}
        return decide(limit, True, new_tat - now)


class RedisBuckets:
    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_GCRA_LUA)

    def hit(self, key: str, limit: int) -> Decision:
        allowed, debt = self._script(keys=[key], args=[PERIOD_MS / limit, PERIOD_MS])
        return decide(limit, bool(allowed), float(debt))


class RateLimiter:
    def __init__(self, redis_url: str | None) -> None:
        self.local = LocalBuckets()
        self.shared = RedisBuckets(redis_url) if redis_url else None
        self._warned_at = 0.0

    def hit(self, name: str, api_key_id: str, limit: int) -> Decision:
        key = _REDIS_KEY.format(name=name, key=api_key_id)
        if self.shared is not None:
            try:
                return self.shared.hit(key, limit)
            except Exception as exc:  # redis down or restarting: limit per process meanwhile
                if time.monotonic() - self._warned_at > 30:
                    self._warned_at = time.monotonic()
                    log.warning("rate limits fall back to per-process buckets: Redis error %s", exc)
        return self.local.hit(key, limit)


@lru_cache
def get_rate_limiter() -> RateLimiter:
    return RateLimiter(get_settings().redis_url)


def format_duration(ms: int) -> str:
    """OpenAI's reset format: ``120ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):g}s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    headers = {
        "x-ratelimit-limit-requests": str(decision.limit),
        "x-ratelimit-remaining-requests": str(decision.remaining),
        "x-ratelimit-reset-requests": format_duration(decision.reset_ms),
    }
    if not decision.allowed:
        headers["retry-after"] = str(math.ceil(decision.retry_after_ms / 1000))
        headers["retry-after-ms"] = str(decision.retry_after_ms)
    return headers


class RateLimited:
    """FastAPI dependency: count this request against the caller's ``name`` limit (see module doc)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, request: Request, principal: PrincipalDep) -> None:
        settings: Settings = get_settings()
        limit = settings.rate_limit(self.name)
        if limit <= 0 or principal.internal:  # the service's own grader calls: an RL step fans out many
            return
        decision = get_rate_limiter().hit(self.name, principal.key_id, limit)
        headers = rate_limit_headers(decision)
        request.state.ratelimit_headers = headers
        if not decision.allowed:
            raise APIError(
                429,
                f"Rate limit reached for {self.name} requests: {limit} per minute per API key. "
                f"Retry in {format_duration(decision.retry_after_ms)}.",
                code="rate_limit_exceeded",
                type="requests",
                headers=headers,
            )


class RateLimitHeadersMiddleware:
    """Adds the headers a :class:`RateLimited` dependency computed to whatever response the route sends
    (a streamed one, or an error raised after the check)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            headers = state.get(_STATE_KEY)
            if message["type"] == "http.response.start" and headers:
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in headers.items() if k.encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
