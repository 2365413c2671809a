"""The client's errors are the SDK's (one class per HTTP status, connection and timeout errors; ``openrft``
exports them under the names it always had) plus one of its own: a file that failed local validation.
``OpenRFTError`` is the SDK's ``OpenAIError``, the base of every error the client raises. And how an API error
reads to a person."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openai import APIError, APIStatusError
from openai import OpenAIError as OpenRFTError

if TYPE_CHECKING:
    from openrft.validation import ValidationReport


class FileValidationError(OpenRFTError):
    """A JSONL file failed local validation before upload (the same line-numbered errors as the server)."""

    def __init__(self, report: ValidationReport, label: str = "training file") -> None:
        super().__init__(report.summary(label))
        self.report = report


class NoAPIKeyError(OpenRFTError):
    """No API key was given or found (the CLI words its own advice: --api-key, OPENRFT_API_KEY)."""


def error_message(exc: APIError) -> str:
    """What the server said: the ``message`` of its OpenAI-shaped error body (the SDK's exception keeps that
    body's ``error`` object), else its text (a proxy's page, say), else the SDK's own message."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message


def status_line(exc: APIStatusError) -> str:
    """One line for a person: the server's message, then status, code, parameter and request id."""
    detail = ", ".join(p for p in (exc.code, f"param={exc.param}" if exc.param else None) if p)
    suffix = f" ({exc.status_code}{', ' + detail if detail else ''}"
    suffix += f", request {exc.request_id})" if exc.request_id else ")"
    return f"{error_message(exc)}{suffix}"
