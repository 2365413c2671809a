"""The one-time dashboard login link that ``openrft serve`` prints: a random token whose digest and expiry sit
in OPENRFT_HOME (0600), redeemed once, by the dashboard's script, for the service's local key, so a new user
opens the dashboard from the terminal without copying a key. The token travels in the URL's fragment, which
browsers never send to a server nor keep in a Referer; the script drops it from the address bar at once."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from core.settings import Settings

LOGIN_TTL_SECONDS = 24 * 3600


def _file(settings: Settings) -> Path:
    return settings.home / "dashboard_login.json"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def local_key(settings: Settings) -> str | None:
    """The key this machine's service was started with: the bootstrap key, else the one serve wrote."""
    if settings.bootstrap_api_key:
        return settings.bootstrap_api_key
    try:
        return (settings.home / "api_key").read_text().strip() or None
    except OSError:
        return None


def issue_login(settings: Settings, *, now: float | None = None) -> str | None:
    """A new one-time token (replacing any earlier one), or None when there is no local key to log in with."""
    if local_key(settings) is None:
        return None
    token = secrets.token_urlsafe(24)
    record = {"digest": _digest(token), "expires_at": (now or time.time()) + LOGIN_TTL_SECONDS}
    path = _file(settings)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)
    return token


def redeem_login(settings: Settings, token: str, *, now: float | None = None) -> str | None:
    """The local key for a valid, unused, unexpired ``token``; None otherwise. A wrong token leaves the link
    alone; the right one takes the record away (renamed: of two at once, one wins), so a link works once."""
    path = _file(settings)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not hmac.compare_digest(str(record.get("digest", "")), _digest(token)):
        return None
    taken = path.with_name(f".{path.name}.{secrets.token_hex(6)}.taken")
    try:
        os.rename(path, taken)
    except OSError:
        return None  # redeemed a moment ago
    with contextlib.suppress(OSError):
        taken.unlink()
    if float(record.get("expires_at", 0)) <= (now or time.time()):
        return None
    return local_key(settings)
