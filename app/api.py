"""Collects the /v1 routers."""

from __future__ import annotations

from fastapi import APIRouter

from app.routes import chat, files, graders, jobs, models

api_router = APIRouter(prefix="/v1")
api_router.include_router(files.router)
api_router.include_router(jobs.router)
api_router.include_router(graders.router)
api_router.include_router(models.router)
api_router.include_router(chat.router)
