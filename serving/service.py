"""The one object the API's routes use: resolve the model, make sure its engine and adapter are up, proxy.

    service = ServingService.from_config(ServingConfig(base_models=settings.all_base_models, ...))
    result = await service.chat_completions(body, lookup=lookup_for_org)   # ProxyResponse | ProxyStream
    await service.unload(model_id)                                         # on DELETE /v1/models/{id}
    await service.close()                                                  # on shutdown

Every failure is a :class:`~serving.errors.ServingError` carrying its HTTP status and OpenAI error body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.backends import CPU, CpuBackend, EngineBackend
from serving.errors import EngineUnavailableError, ServingError, UpstreamError
from serving.proxy import EngineProxy, ProxyResponse, ProxyStream
from serving.registry import ModelFiles, ModelLookup, ModelRegistry, engine_lora_name, merged_engine_name
from serving.supervisor import ServingSupervisor, SupervisorConfig
from serving.vllm_backend import VllmBackend


@dataclass
class ServingConfig:
    base_models: Mapping[str, str]
    """Public base model name -> source (local dir, HF id, gguf:<package>/<file>)."""
    backend: str = "auto"
    """auto, or the name of a registered backend (cpu, vllm)."""
    cache_dir: Path | None = None
    """Where converted base models are cached (share it with the trainer)."""
    log_dir: Path | None = None
    max_loras: int = 4
    max_lora_rank: int = 256
    """Training allows ranks up to 256: by default every trained adapter can be served."""
    max_batch_size: int = 16
    cpu_threads: int = 0
    gpu_memory_utilization: float = 0.85
    """Share of each serving GPU's memory that the engines on it take together."""
    gpus: list[str] | None = None
    """CUDA devices for vLLM engines (None: all visible to the API process)."""
    engines_per_gpu: int = 1
    """vLLM engines one GPU holds (each base model and merged fine-tune is one); each gets an equal share."""
    cpu_models: tuple[str, ...] = ()
    """Base models the CPU engine serves even when the backend is vLLM (they then hold no GPU place)."""
    vllm_reasoning_parser: str | None = None
    vllm_extra_args: tuple[str, ...] = ()
    wait_for_ready: float = 10.0
    retry_after: int = 10
    host: str = "127.0.0.1"
    engine_env: dict[str, str] = field(default_factory=dict)


# The engine backends by the name OPENRFT_SERVING_BACKEND gives, each built from the config: adding a backend
# is one entry here (and its name in the setting's choices).
BACKENDS: dict[str, Callable[[ServingConfig], EngineBackend]] = {
    CPU: lambda config: CpuBackend(
        max_loras=config.max_loras,
        max_lora_rank=config.max_lora_rank,
        max_batch_size=config.max_batch_size,
        threads=config.cpu_threads,
        cache_dir=config.cache_dir,
    ),
    "vllm": lambda config: VllmBackend(
        max_loras=config.max_loras,
        max_lora_rank=config.max_lora_rank,
        gpu_memory_utilization=config.gpu_memory_utilization,
        reasoning_parser=config.vllm_reasoning_parser,
        cache_dir=config.cache_dir,
        extra_args=config.vllm_extra_args,
        env=dict(config.engine_env),
    ),
}


class ServingService:
    def __init__(self, registry: ModelRegistry, supervisor: ServingSupervisor, proxy: EngineProxy) -> None:
        self.registry = registry
        self.supervisor = supervisor
        self.proxy = proxy
        self._checks: set[asyncio.Task[bool]] = set()

    @classmethod
    def from_config(
        cls, config: ServingConfig, lookup: ModelLookup | None = None, *, files: ModelFiles | None = None
    ) -> ServingService:
        supervisor = ServingSupervisor(
            SupervisorConfig(
                backend=config.backend,
                host=config.host,
                log_dir=config.log_dir,
                wait_for_ready=config.wait_for_ready,
                retry_after=config.retry_after,
                gpus=config.gpus,
                gpu_memory_utilization=config.gpu_memory_utilization,
                engines_per_gpu=config.engines_per_gpu,
                cpu_models=frozenset(config.cpu_models),
            ),
            backends={name: make(config) for name, make in BACKENDS.items()},
        )
        return cls(ModelRegistry(config.base_models, lookup, files=files), supervisor, EngineProxy())

    async def chat_completions(
        self, body: dict[str, Any], *, lookup: ModelLookup | None = None
    ) -> ProxyResponse | ProxyStream:
        return await self._forward("/v1/chat/completions", body, lookup)

    async def completions(
        self, body: dict[str, Any], *, lookup: ModelLookup | None = None
    ) -> ProxyResponse | ProxyStream:
        return await self._forward("/v1/completions", body, lookup)

    async def _forward(
        self, path: str, body: dict[str, Any], lookup: ModelLookup | None
    ) -> ProxyResponse | ProxyStream:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ServingError(
                "You must provide a model parameter.",
                status_code=400,
                type="invalid_request_error",
                param="model",
            )
        resolved = await self.registry.resolve(model, lookup=lookup)
        engine = await self.supervisor.engine_for(resolved.base_model, resolved.base_source)
        for attempt in range(2):
            if resolved.adapter_path is not None:
                await self.supervisor.ensure_adapter(
                    engine,
                    resolved.engine_model,
                    str(resolved.adapter_path),
                    model=model,
                    version=resolved.adapter_version,
                )
            try:
                return await self.proxy.forward(
                    engine.base_url,
                    path,
                    body,
                    engine_model=resolved.engine_model,
                    public_model=model,
                    headers=engine.headers,
                    split_reasoning=path == "/v1/chat/completions"
                    and bool(getattr(engine.backend, "proxy_splits_reasoning", False)),
                )
            except UpstreamError as exc:
                # An engine restarted behind our back forgets its adapters: load it again, once.
                if exc.status_code == 404 and resolved.adapter_path is not None and attempt == 0:
                    self.supervisor.forget_adapter(engine, resolved.engine_model)
                    continue
                raise
            except EngineUnavailableError:
                task = asyncio.create_task(self.supervisor.check(engine))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)
                raise
        raise AssertionError("unreachable")

    async def unload(self, model_id: str) -> int:
        """Unload a deleted fine-tuned model: its adapter from the engines that loaded it, or the engine of
        its merged weights (which frees that engine's GPU place)."""
        merged = merged_engine_name(model_id)
        if any(engine.base_model == merged for engine in self.supervisor.engines()):
            await self.supervisor.stop_engine(merged)
            return 1
        return await self.supervisor.unload_adapter(engine_lora_name(model_id))

    def status(self) -> list[dict[str, Any]]:
        return [engine.describe() for engine in self.supervisor.engines()]

    async def close(self) -> None:
        await self.supervisor.close()
        await self.proxy.close()
