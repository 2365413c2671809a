"""The service's deployment settings for graders, handed to the grader engine (API and workers)."""

from __future__ import annotations

from typing import Any

from app.settings import Settings


def grader_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``trainer.graders.GraderSettings``."""
    return {
        "base_url": settings.grader_base_url or settings.public_base_url,
        "api_key": settings.grader_api_key or settings.bootstrap_api_key,
        "models": settings.grader_models,
        # User code must never see the service's data: the database, uploads, models, other jobs.
        "hidden_paths": [str(settings.home)],
    }
