"""Graders for the API: the deployment's grader settings, and a small process pool that runs
``/graders/run`` so that nothing a grader needs (sentence-transformers and torch for ``cosine``, the sandbox
plumbing for ``python``) is ever loaded into the API process."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from app.errors import bad_request
from core.settings import Settings, grader_settings
from trainer.graders import registry
from trainer.graders.registry import judge_models

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()
RUN_TIMEOUT_SECONDS = 300


def _run(
    spec: dict[str, Any], model_sample: str, item: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    from trainer.graders import GraderSettings, run_grader

    return run_grader(spec, model_sample, item, GraderSettings(**settings))


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # spawn: a clean interpreter, not a fork of the API with its threads and connections.
            _pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def judge_model_names(settings: Settings) -> list[str] | None:
    """The models a score_model / label_model grader can name here: this service's base models (judged by
    its own engines) and the models OPENRFT_GRADER_MODELS maps to an endpoint; None when
    OPENRFT_GRADER_BASE_URL sends every grader model to an endpoint whose models this service cannot list."""
    if settings.grader_base_url:
        return None
    return sorted({*settings.all_base_models, *settings.grader_models})


def check_grader_limits(spec: Any, settings: Settings, *, at: str = "") -> None:
    """Refuse, before validating it, a grader larger than the operator's ceilings: its size as JSON, the graders
    in its tree, its template variables (each one is resolved for every sample of a job)."""
    import json

    try:
        size = len(json.dumps(spec, ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        return  # not JSON-shaped: validate_grader names what is wrong
    if size > settings.max_grader_bytes:
        raise bad_request(
            f"Invalid grader: it is {size} bytes as JSON; this service takes graders up to "
            f"{settings.max_grader_bytes} bytes (OPENRFT_MAX_GRADER_BYTES).",
            param=at + "grader",
            code="invalid_grader",
        )
    types = set(registry.names())
    graders = variables = 0
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            graders += isinstance(kind, str) and kind in types
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            variables += node.count("{{")
    for count, limit, what, setting in (
        (graders, settings.max_graders, "graders", "OPENRFT_MAX_GRADERS"),
        (variables, settings.max_template_variables, "template variables", "OPENRFT_MAX_TEMPLATE_VARIABLES"),
    ):
        if count > limit:
            raise bad_request(
                f"Invalid grader: it has {count} {what}; this service takes up to {limit} ({setting}).",
                param=at + "grader",
                code="invalid_grader",
            )


def check_judge_models(spec: dict[str, Any], settings: Settings, *, at: str = "") -> None:
    """Refuse a validated grader whose judge model nothing here can answer (a 400 naming the field), instead
    of a job that fails at its first grading with 404s buried in grader errors."""
    known = judge_model_names(settings)
    if known is None:
        return
    for param, model in judge_models(spec):
        if model not in known:
            raise bad_request(
                f"Invalid grader: the grader model {model!r} is not served by this service. Models it can "
                f"judge with: {', '.join(known)}. To judge with another model, map it to an "
                "OpenAI-compatible endpoint in the server's environment: "
                f'OPENRFT_GRADER_MODELS=\'{{"{model}": {{"base_url": "https://host/v1", "api_key": "..."}}}}\' '
                "(or OPENRFT_GRADER_BASE_URL for one endpoint that serves every grader model), then restart.",
                param=at + param,
                code="invalid_grader",
            )


def run_grader_isolated(
    spec: dict[str, Any], model_sample: str, item: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Run one grader call in the grading pool; a crashed pool is replaced once."""
    global _pool
    for attempt in (1, 2):
        pool = _executor()
        try:
            return pool.submit(_run, spec, model_sample, item, grader_settings(settings)).result(
                RUN_TIMEOUT_SECONDS
            )
        except BrokenProcessPool:
            with _lock:
                if _pool is pool:
                    _pool = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def shutdown_pool(timeout: float = 5.0) -> None:
    """Stop the grading pool's processes: a grader still running is ended, not left behind when the API
    process exits (``shutdown(wait=False)`` alone leaves busy workers running)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1)
