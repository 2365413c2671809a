"""Exceptions raised by the client: one class per HTTP status, plus connection, timeout and local errors.

Every API error carries the fields of OpenAI's error body (``message``, ``type``, ``param``, ``code``) and the
``x-request-id`` of the response, so a failure can be matched with the server's logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from openrft.validation import ValidationReport

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "FileValidationError",
    "InternalServerError",
    "NotFoundError",
    "OpenRFTError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
]


class OpenRFTError(Exception):
    """Base class of every error this package raises."""


class FileValidationError(OpenRFTError):
    """A JSONL file failed local validation before upload (the same line-numbered errors as the server)."""

    def __init__(self, report: ValidationReport, label: str = "training file") -> None:
        super().__init__(report.summary(label))
        self.report = report


class APIError(OpenRFTError):
    """An error talking to the API. ``body`` is the decoded response body, when there is one."""

    message: str
    request: httpx.Request
    body: object | None
    type: str | None
    param: str | None
    code: str | None

    def __init__(self, message: str, request: httpx.Request, *, body: object | None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        self.type = _str_or_none(err.get("type"))
        self.param = _str_or_none(err.get("param"))
        self.code = _str_or_none(err.get("code"))


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status."""

    response: httpx.Response
    status_code: int
    request_id: str | None

    def __init__(self, message: str, *, response: httpx.Response, body: object | None) -> None:
        super().__init__(message, response.request, body=body)
        self.response = response
        self.status_code = response.status_code
        self.request_id = response.headers.get("x-request-id")

    def __str__(self) -> str:
        detail = ", ".join(p for p in (self.code, f"param={self.param}" if self.param else None) if p)
        suffix = f" ({self.status_code}{', ' + detail if detail else ''}"
        suffix += f", request {self.request_id})" if self.request_id else ")"
        return f"{self.message}{suffix}"


class APIConnectionError(APIError):
    """The request never got an answer: the server is down, unreachable, or closed the connection."""

    def __init__(self, request: httpx.Request, message: str | None = None) -> None:
        url = request.url.copy_with(path="/", query=None)
        super().__init__(message or f"Connection error: could not reach {url}.", request, body=None)


class APITimeoutError(APIConnectionError):
    def __init__(self, request: httpx.Request) -> None:
        super().__init__(request, f"Request timed out: {request.method} {request.url.path}.")


class APIResponseValidationError(APIError):
    """The response did not have the expected shape (a proxy page instead of JSON, for example)."""

    def __init__(self, response: httpx.Response, body: object | None, message: str | None = None) -> None:
        super().__init__(
            message or f"Unexpected response from {response.request.url.path} ({response.status_code}).",
            response.request,
            body=body,
        )
        self.response = response
        self.status_code = response.status_code


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(response: httpx.Response, body: object | None) -> APIStatusError:
    """The exception for an error response, its message taken from OpenAI's error body when present."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        message = err["message"]
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    else:
        message = f"Error code: {response.status_code}"
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(message, response=response, body=body)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
