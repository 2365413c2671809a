"""Public model ids -> what serves them: (base model, its source, adapter directory or None).

Base models come from a name -> source mapping (the service's settings). Fine-tuned models
(``ft:{base}:{org}:{suffix}:{job}`` and their ``…:ckpt-step-N`` checkpoints) come from a lookup callable
the app passes in: the app owns the database and the caller's organization, serving only asks.

A fine-tuned model's directory is either a PEFT adapter (``adapter_config.json``: loaded into its base
model's engine) or full weights (``merge_weights``: ``config.json`` and no adapter config), which are served
as a model of their own, in their own engine. A record with a storage key names a stored copy of that
directory: :class:`ModelFiles` (given by the app) finds or fetches it onto this machine, since the worker
that trained the model may have been another machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serving.errors import ModelNotFoundError

_CHECKPOINT = re.compile(r"ckpt-step-(\d+)")


@dataclass(frozen=True)
class FineTunedId:
    base: str
    org: str
    suffix: str
    job: str
    step: int | None = None


def parse_fine_tuned_id(model_id: str) -> FineTunedId | None:
    """Split ``ft:{base}:{org}:{suffix}:{job}[:ckpt-step-N]`` (empty suffix allowed); None if not one."""
    parts = model_id.split(":")
    if parts[0] != "ft" or len(parts) < 5:
        return None
    step = None
    if (m := _CHECKPOINT.fullmatch(parts[-1])) is not None:
        step = int(m.group(1))
        parts = parts[:-1]
    if len(parts) != 5 or not all(parts[i] for i in (1, 2, 4)):
        return None
    return FineTunedId(base=parts[1], org=parts[2], suffix=parts[3], job=parts[4], step=step)


def engine_lora_name(public_id: str) -> str:
    """A stable, engine-safe adapter name for a public model id (readable, with a hash against collisions)."""
    return _engine_safe("lora", public_id)


def merged_engine_name(public_id: str) -> str:
    """The engine key and served name of a merged (full-weights) fine-tuned model."""
    return _engine_safe("merged", public_id)


def _engine_safe(prefix: str, public_id: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", public_id.removeprefix("ft:")).strip("-")[:80]
    digest = hashlib.sha256(public_id.encode()).hexdigest()[:10]
    return f"{prefix}-{readable}-{digest}"


def is_full_model_dir(path: Path) -> bool:
    """Merged weights (a model config and no adapter config), as opposed to a PEFT adapter."""
    return not (path / "adapter_config.json").exists() and (path / "config.json").exists()


def adapter_version(path: Path) -> str:
    """The path plus a stamp of the adapter's weights: changes when the files at the path are rewritten."""
    for name in ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json"):
        try:
            st = (path / name).stat()
        except OSError:
            continue
        return f"{path}@{st.st_mtime_ns}:{st.st_size}"
    return str(path)


@dataclass(frozen=True)
class FineTunedRecord:
    """What the app knows about a fine-tuned model (a row of its registry)."""

    id: str
    base_model: str
    adapter_path: str | Path
    """Where the worker that trained it wrote it (on that worker's machine)."""
    storage_key: str | None = None
    """Its object in the service's storage, when it was uploaded there."""


class ModelFiles(Protocol):
    def local_dir(self, key: str, hint: Path | None = None) -> Path:
        """A directory on this machine holding the stored directory ``key``: ``hint`` if it holds it, else
        a local copy (fetched on first use; blocking). Raises ``ModelFilesUnavailableError``."""


@dataclass(frozen=True)
class ResolvedModel:
    public_id: str
    base_model: str
    base_source: str
    adapter_path: Path | None = None
    adapter_version: str | None = None
    """See :func:`adapter_version`; a change reloads the adapter in place."""

    @property
    def engine_model(self) -> str:
        """The name to send to the engine: the served base name, or the adapter's engine name."""
        return self.base_model if self.adapter_path is None else engine_lora_name(self.public_id)


ModelLookup = Callable[[str], FineTunedRecord | Awaitable[FineTunedRecord | None] | None]


class ModelRegistry:
    def __init__(
        self,
        base_models: Mapping[str, str],
        lookup: ModelLookup | None = None,
        *,
        files: ModelFiles | None = None,
    ) -> None:
        self.base_models = dict(base_models)
        self._lookup = lookup
        self._files = files

    async def resolve(self, model_id: str, *, lookup: ModelLookup | None = None) -> ResolvedModel:
        """Resolve ``model_id``; ``lookup`` (e.g. bound to the caller's organization) overrides the default.

        A synchronous lookup runs in a worker thread, so a database query never blocks the event loop.
        """
        if model_id in self.base_models:
            return ResolvedModel(model_id, model_id, self.base_models[model_id])
        if parse_fine_tuned_id(model_id) is None:
            raise ModelNotFoundError(model_id)
        fn = lookup or self._lookup
        if fn is None:
            raise ModelNotFoundError(model_id)
        if inspect.iscoroutinefunction(fn):
            record = await fn(model_id)
        else:
            record = await asyncio.to_thread(fn, model_id)
            if inspect.isawaitable(record):
                record = await record
        if record is None:
            raise ModelNotFoundError(model_id)
        assert isinstance(record, FineTunedRecord)
        if record.base_model not in self.base_models:
            raise ModelNotFoundError(model_id)
        path = Path(record.adapter_path)
        if record.storage_key is not None and self._files is not None:
            # A download of the first request for a model trained elsewhere runs off the event loop.
            path = await asyncio.to_thread(self._files.local_dir, record.storage_key, path)
        full, version = await asyncio.to_thread(lambda: (is_full_model_dir(path), adapter_version(path)))
        if full:
            return ResolvedModel(model_id, merged_engine_name(model_id), str(path))
        return ResolvedModel(
            model_id,
            record.base_model,
            self.base_models[record.base_model],
            path,
            adapter_version=version,
        )
