"""Errors of the serving layer, already in OpenAI's shape so the API turns them into responses 1:1.

The API registers one exception handler: ``JSONResponse(exc.to_body(), exc.status_code, headers=exc.headers)``.
"""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    status_code = 500
    type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        status_code: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = dict(headers or {})
        if status_code is not None:
            self.status_code = status_code
        if type is not None:
            self.type = type

    def to_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ModelNotFoundError(ServingError):
    status_code = 404
    type = "invalid_request_error"
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )
        self.model = model


class ModelLoadingError(ServingError):
    """The engine or adapter is still loading: retry after ``retry_after`` seconds."""

    status_code = 503
    type = "service_unavailable_error"
    default_code = "model_loading"

    def __init__(self, model: str, what: str, *, retry_after: int) -> None:
        super().__init__(
            f"The model '{model}' is loading ({what}); retry in about {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class EngineUnavailableError(ServingError):
    """The inference engine could not be started or reached."""

    status_code = 503
    type = "service_unavailable_error"
    default_code = "engine_unavailable"


class ModelFilesUnavailableError(ServingError):
    """A fine-tuned model's files are neither on this machine nor obtainable from the storage."""

    status_code = 503
    type = "service_unavailable_error"
    default_code = "model_files_unavailable"


class UpstreamError(ServingError):
    """The engine answered with an error; status and message are kept."""


_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def openai_error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status: the one table, for the API's errors and the engines'."""
    return _TYPES_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
