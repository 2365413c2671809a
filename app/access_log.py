"""The access log never records a secret a client put in a URL: ``?api_key=``, ``?token=`` and their kind are
written as ``[redacted]`` (uvicorn logs every request's path with its query string)."""

from __future__ import annotations

import logging
import re

_SECRET_PARAM = re.compile(
    r"(?P<name>(?:[^&=?#]*?(?:key|token|secret|password|auth|signature)[^&=?#]*))=(?P<value>[^&#\s]*)",
    re.IGNORECASE,
)


def redact(path: str) -> str:
    """``path`` with the values of secret-looking query parameters replaced."""
    head, sep, query = path.partition("?")
    if not sep:
        return path
    return head + sep + _SECRET_PARAM.sub(lambda m: f"{m['name']}=[redacted]", query)


class RedactSecrets(logging.Filter):
    """For uvicorn's access logger, whose record args are (client, method, path, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def install() -> None:
    """Idempotent: one filter on uvicorn's access logger."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
