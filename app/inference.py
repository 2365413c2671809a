"""The API's handle on the serving layer: one ServingService per app (engines run in their own processes;
this process only proxies, so it never loads torch)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from core.db.models import FineTunedModel
from core.db.scoped import owned
from core.db.session import get_sessionmaker
from core.settings import BUILTIN_BASE_MODELS, Settings, get_settings
from core.storage import DirectoryCache, StorageError, get_storage
from serving.errors import ModelFilesUnavailableError
from serving.gpus import parse_devices
from serving.registry import FineTunedRecord
from serving.service import ServingConfig, ServingService

log = logging.getLogger("openrft.serving")
_build_lock = threading.Lock()


class StoredModels:
    """Fine-tuned models' directories on this machine: the training worker's own copy when this is its
    machine, else a copy fetched from the storage into the cache (see core.storage.DirectoryCache)."""

    def __init__(self, settings: Settings) -> None:
        self.cache = DirectoryCache(get_storage(), settings.artifacts_cache_dir)

    def local_dir(self, key: str, hint: Path | None = None) -> Path:
        try:
            return self.cache.local_dir(key, hint)
        except StorageError as exc:
            log.error("cannot fetch the model files %s: %s", key, exc)
            raise ModelFilesUnavailableError(
                "The model's files could not be fetched from the storage; try again later.",
                headers={"Retry-After": "30"},
            ) from exc


def forget_stored_model(settings: Settings, key: str) -> None:
    """A deleted model's object in the storage and this machine's copy of it (best effort)."""
    try:
        get_storage().delete(key)
    except (StorageError, OSError):
        log.warning("could not delete the model object %s from storage", key, exc_info=True)
    DirectoryCache(get_storage(), settings.artifacts_cache_dir).evict(key)


def build_serving(settings: Settings) -> ServingService:
    return ServingService.from_config(
        ServingConfig(
            base_models=settings.all_base_models,
            backend=settings.serving_backend,
            # The trainer caches converted base models here too: one conversion serves both.
            cache_dir=settings.cache_dir / "models",
            log_dir=settings.logs_dir,
            max_loras=settings.serving_max_loras,
            max_lora_rank=settings.serving_max_lora_rank,
            max_batch_size=settings.serving_max_batch_size,
            cpu_threads=settings.serving_cpu_threads,
            gpu_memory_utilization=settings.serving_gpu_memory_utilization,
            gpus=None if settings.serving_gpus is None else parse_devices(settings.serving_gpus),
            engines_per_gpu=settings.serving_engines_per_gpu,
            cpu_models=tuple(
                BUILTIN_BASE_MODELS
                if settings.serving_cpu_models is None
                else [m.strip() for m in settings.serving_cpu_models.split(",") if m.strip()]
            ),
            vllm_reasoning_parser=settings.serving_vllm_reasoning_parser,
            wait_for_ready=settings.serving_wait_for_ready,
        ),
        files=StoredModels(settings),
    )


def get_serving(request: Request) -> ServingService:
    """The app's one ServingService, built on first use. FastAPI runs this dependency in its thread pool, so
    a burst of first requests (a grader batch right after a restart) comes here on several threads at once:
    without the lock each built its own service, whose supervisor started its own engine of the model."""
    app = request.app
    service: ServingService | None = getattr(app.state, "serving", None)
    if service is None:
        with _build_lock:
            service = getattr(app.state, "serving", None)
            if service is None:
                service = app.state.serving = build_serving(get_settings())
    return service


async def close_serving(app: FastAPI) -> None:
    service: ServingService | None = getattr(app.state, "serving", None)
    if service is not None:
        app.state.serving = None
        await service.close()


ServingDep = Annotated[ServingService, Depends(get_serving)]


def model_lookup(org_pk: int) -> Callable[[str], FineTunedRecord | None]:
    """A lookup of fine-tuned models bound to one organization: other tenants' models do not exist."""

    def lookup(model_id: str) -> FineTunedRecord | None:
        with get_sessionmaker()() as session:
            row = owned(session, FineTunedModel, model_id, org_pk)
            if row is None:
                return None
            return FineTunedRecord(
                id=row.id, base_model=row.base_model, adapter_path=row.path, storage_key=row.storage_key
            )

    return lookup
