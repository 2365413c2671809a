"""The CPU engine's HTTP routes, in vLLM's shape: ``/health``, ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions`` and the runtime adapter endpoints; errors as ``{"error": {..., "code": <status>}}``."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from serving.cpu_server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EngineHTTPError,
    LoadLoraAdapterRequest,
    UnloadLoraAdapterRequest,
    error_response,
)
from serving.cpu_server.serving import EngineServer


def create_app(server: EngineServer, *, api_key: str | None = None) -> FastAPI:
    """``api_key``: the secret every route but /health wants as a bearer token (the API that started this engine
    holds it; without it, anything on the machine could list, load and serve every tenant's adapters)."""
    app = FastAPI(title="OpenRFT CPU engine", docs_url=None, redoc_url=None)

    if api_key:
        expected = f"Bearer {api_key}".encode()

        @app.middleware("http")
        async def _require_key(request: Request, call_next: Any) -> Any:
            if request.url.path != "/health" and not hmac.compare_digest(
                request.headers.get("authorization", "").encode(), expected
            ):
                return error_response(401, "This engine answers only the service that started it.", None)
            return await call_next(request)

    @app.exception_handler(EngineHTTPError)
    async def _engineerror_response(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EngineHTTPError)
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validationerror_response(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = str(first.get("msg", "Invalid request."))
        return error_response(400, message.removeprefix("Value error, "), ".".join(loc) or None)

    @app.get("/health")
    async def health() -> PlainTextResponse:
        if not server.engine.alive:
            return PlainTextResponse("engine thread is not running", status_code=503)
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(server.models())

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> Any:
        return await server.chat(req)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Any:
        return await server.completions(req)

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(req: LoadLoraAdapterRequest) -> Any:
        return await server.load_adapter(req)

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(req: UnloadLoraAdapterRequest) -> Any:
        return await server.unload_adapter(req)

    return app
