"""Transient database errors: which ones are worth retrying, and a retry helper for the workers.

A restarted PostgreSQL drops every pooled connection and refuses new ones for a few seconds; the pool's
pre-ping reconnects on the next checkout, so an operation that failed for that reason succeeds when
retried. Errors in the query itself (bad SQL, constraint violations) are not transient and never retried.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

log = logging.getLogger("openrft.db")

T = TypeVar("T")

# SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57P0x server shutting down or
# starting, 40001/40P01 serialization failure and deadlock (the transaction can simply run again).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P0", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """True for database errors that a retry after a short wait can fix (lost connection, server
    restarting, SQLite busy)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return str(sqlstate).startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a server dependency
        return False
    # No SQLSTATE: the client could not talk to the server at all (refused, reset, timed out).
    return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("database unavailable (attempt %d), retrying: %s", state.attempt_number, exc)


def retry_db(fn: Callable[[], T], *, max_seconds: float) -> T:
    """Run ``fn`` (one whole transaction), again with backoff while the database is unavailable, for up
    to ``max_seconds``; other errors propagate at once."""
    wrapped = retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(max_seconds),
        wait=wait_exponential_jitter(initial=0.2, max=5),
        before_sleep=_log_retry,
        reraise=True,
    )(fn)
    return wrapped()
