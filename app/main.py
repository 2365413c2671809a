"""The FastAPI application: middleware, error handlers, routers."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from app.api import api_router
from app.errors import install_error_handlers
from app.middleware import RequestIdMiddleware
from app.routes import health


def create_app() -> FastAPI:
    app = FastAPI(
        title="OpenRFT",
        version="0.1.0",
        summary="Self-hosted, OpenAI-compatible reinforcement fine-tuning.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(api_router)
    logging.getLogger("openrft").setLevel(logging.INFO)
    return app


app = create_app()
