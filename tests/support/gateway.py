"""A minimal ASGI app that serves ``/v1/chat/completions`` and ``/v1/completions`` through a
:class:`~serving.service.ServingService`: the shape of the API's chat route, used by the benchmark and
tests (the real route adds auth, the caller's organization and the request id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from serving.errors import ServingError
from serving.proxy import ProxyResponse, ProxyStream
from serving.registry import ModelLookup
from serving.service import ServingService


def to_response(result: ProxyResponse | ProxyStream) -> Response:
    if isinstance(result, ProxyStream):
        return StreamingResponse(result.chunks, status_code=result.status_code, media_type=result.media_type)
    return Response(result.content, status_code=result.status_code, media_type=result.media_type)


def error_response(exc: ServingError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


def create_gateway_app(
    service: ServingService, *, lookup: ModelLookup | None = None, close_on_shutdown: bool = True
) -> Starlette:
    """The app; on shutdown it closes ``service`` (stopping its engines) on the loop that used it."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_on_shutdown:
                await service.close()

    async def forward(request: Request) -> Response:
        try:
            body: Any = await request.json()
        except ValueError:
            return error_response(
                ServingError("The body is not valid JSON.", status_code=400, type="invalid_request_error")
            )
        if not isinstance(body, dict):
            return error_response(
                ServingError("The body must be a JSON object.", status_code=400, type="invalid_request_error")
            )
        try:
            if request.url.path.endswith("/chat/completions"):
                result = await service.chat_completions(body, lookup=lookup)
            else:
                result = await service.completions(body, lookup=lookup)
        except ServingError as exc:
            return error_response(exc)
        return to_response(result)

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/chat/completions", forward, methods=["POST"]),
            Route("/v1/completions", forward, methods=["POST"]),
        ],
    )
