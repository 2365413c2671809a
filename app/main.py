"""The FastAPI application: middleware, error handlers, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import access_log
from app.api import api_router
from app.dashboard import router as dashboard_router
from app.errors import install_error_handlers
from app.grading import shutdown_pool
from app.inference import close_serving
from app.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from app.openapi_schema import install as install_openapi
from app.ratelimit import RateLimitHeadersMiddleware
from app.routes import docs, health
from core.settings import get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    shutdown_pool()
    await close_serving(app)  # stops the inference engines this process started


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="OpenRFT",
        version="0.1.0",
        summary="Self-hosted, OpenAI-compatible reinforcement fine-tuning.",
        openapi_url="/openapi.json",
        docs_url=None,  # app.routes.docs serves Swagger UI from local files
        redoc_url=None,
    )
    install_openapi(app)
    install_error_handlers(app)
    app.add_middleware(RateLimitHeadersMiddleware)
    # Uploads stream to storage under their own limit (OPENRFT_MAX_UPLOAD_BYTES).
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=get_settings().max_request_bytes,
        exempt=[("POST", "/v1/files")],
    )
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(api_router)
    app.include_router(dashboard_router)
    logging.getLogger("openrft").setLevel(logging.INFO)
    access_log.install()
    return app


app = create_app()
