"""Waiting out a cold model: the service answers 503 ``model_loading`` (with ``retry-after``) while it starts a
model's inference engine, which can take longer than the client's ordinary retries allow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from openai import APIStatusError

from openrft._exceptions import error_message

R = TypeVar("R")


def is_loading(exc: BaseException) -> bool:
    return isinstance(exc, APIStatusError) and exc.status_code == 503 and exc.code == "model_loading"


def _retry_after(exc: APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except ValueError:
        return None


def retry_while_loading(
    call: Callable[[], R], *, timeout: float = 300.0, on_wait: Callable[[str], None] | None = None
) -> R:
    """``call()``, repeated while the model is loading (up to ``timeout`` seconds); other errors propagate."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except APIStatusError as exc:
            if not is_loading(exc) or time.monotonic() >= deadline:
                raise
            if on_wait is not None:
                on_wait(error_message(exc))
            wait = _retry_after(exc) or 5.0
            time.sleep(max(0.5, min(wait, deadline - time.monotonic(), 15.0)))
