"""When to retry a request and how long to wait: the openai-python rules.

Retried: connection errors, timeouts, and 408, 409, 429 and 5xx answers, unless the server says otherwise with
``x-should-retry``. The wait honours ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date) when it is
between 0 and 60 s, else it is exponential (0.5 s doubling, at most 8 s) with up to 25% jitter.
"""

from __future__ import annotations

import email.utils
import random
import time

import httpx

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_HONOURED_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({408, 409, 429})


def should_retry(response: httpx.Response) -> bool:
    override = response.headers.get("x-should-retry")
    if override == "true":
        return True
    if override == "false":
        return False
    return response.status_code in RETRY_STATUSES or response.status_code >= 500


def retry_after_seconds(headers: httpx.Headers | None) -> float | None:
    """The server's requested wait, if it gave one we can parse."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed) - time.time())


def retry_delay(retries_taken: int, headers: httpx.Headers | None = None) -> float:
    """Seconds to wait before retry number ``retries_taken + 1``."""
    after = retry_after_seconds(headers)
    if after is not None and 0 < after <= MAX_HONOURED_RETRY_AFTER:
        return after
    delay = min(INITIAL_RETRY_DELAY * 2.0**retries_taken, MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())
