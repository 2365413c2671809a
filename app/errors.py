"""One error shape everywhere: ``{"error": {"message", "type", "param", "code"}}``.

Handlers turn our :class:`APIError`, Starlette's HTTP exceptions, request validation errors and any
unhandled exception into it, so even a 404 on an unknown route or a 500 speaks OpenAI's format.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.db.retry import is_transient
from serving.errors import ServingError, openai_error_type
from trainer.config import ConfigError
from trainer.graders import GraderValidationError

log = logging.getLogger("openrft.api")


class APIError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type or openai_error_type(status_code)
        self.headers = headers or {}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(kind: str, ident: str, *, param: str | None = None) -> APIError:
    return APIError(
        404, f"No such {kind}: '{ident}'.", param=param, code=f"{kind.replace(' ', '_')}_not_found"
    )


def domain_error(exc: Exception, *, grader_at: str = "") -> APIError:
    """The one mapping from domain errors (serving, the grader engine, job options) to OpenAI-shaped HTTP
    errors. ``grader_at`` is where the grader sits in the request body, e.g. ``method.reinforcement.``."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ServingError):  # already in OpenAI's shape
        return APIError(
            exc.status_code, exc.message, param=exc.param, code=exc.code, type=exc.type, headers=exc.headers
        )
    if isinstance(exc, GraderValidationError):
        return bad_request(
            f"Invalid grader: {exc.message}", param=grader_at + (exc.param or "grader"), code="invalid_grader"
        )
    if isinstance(exc, ConfigError):
        return bad_request(str(exc.message), param=exc.param, code="invalid_hyperparameters")
    raise TypeError(f"no HTTP error for {type(exc).__name__}") from exc


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def api_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return _response(exc.status_code, error_body(exc.message, exc.type, exc.param, exc.code), exc.headers)


async def domain_error_handler(_: Request, exc: Exception) -> JSONResponse:
    return await api_error_handler(_, domain_error(exc))


async def http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    if status == 404 and message == "Not Found":
        message = "Unknown request URL. Please check the URL and method."
    if status == 405:
        message = "Method not allowed for this URL."
    return _response(
        status,
        error_body(message, openai_error_type(status)),
        dict(exc.headers or {}),
    )


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "Invalid request."}
    if first.get("type") == "json_invalid":
        # Its loc is the character offset, not a field: name the body, say where it broke.
        loc = tuple(first.get("loc", ()))
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        ctx = first.get("ctx")
        detail = (ctx.get("error") if isinstance(ctx, dict) else None) or "invalid JSON"
        return _response(
            400,
            error_body(
                f"We could not parse the JSON body of your request ({detail}{where}). "
                "The API expects a JSON object with Content-Type: application/json.",
                "invalid_request_error",
                None,
                "invalid_json",
            ),
        )
    param = _loc_to_param(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "Invalid request."))
    message = f"Invalid value for '{param}': {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    # OpenAI answers malformed bodies with 400, not FastAPI's 422.
    return _response(400, error_body(message, "invalid_request_error", param, "invalid_request"))


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _response(
        500,
        error_body(
            "The server had an error while processing your request. Retry, or contact the operator with "
            f"the request id {request.state.request_id if hasattr(request.state, 'request_id') else ''}.",
            "server_error",
        ),
    )


async def database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A database that is restarting or unreachable is a 503 the client may retry (the SDKs do); a value
    the database cannot hold (a NUL character in a string: PostgreSQL text refuses it) is the request's
    fault, a 400; any other database error is a bug, a plain 500."""
    if isinstance(exc, DataError):
        return _response(
            400,
            error_body(
                "A value in the request cannot be stored (for example a NUL character in a string).",
                "invalid_request_error",
                code="invalid_value",
            ),
        )
    if not is_transient(exc):
        return await unhandled_error_handler(request, exc)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _response(
        503,
        error_body(
            "The service's database is temporarily unavailable. Retry in a few seconds.",
            "service_unavailable_error",
            code="database_unavailable",
        ),
        {"retry-after": "2"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, api_error_handler)
    for domain in (ServingError, GraderValidationError, ConfigError):
        app.add_exception_handler(domain, domain_error_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
