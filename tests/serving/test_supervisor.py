"""The supervisor with fake engine processes (fast): lazy start, loading signal, adapter loads, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.backends import EngineLaunch
from serving.errors import EngineUnavailableError, ModelLoadingError
from serving.proxy import EngineProxy, ProxyResponse
from serving.registry import FineTunedRecord, ModelRegistry, engine_lora_name
from serving.service import ServingService
from serving.supervisor import EngineState, ServingSupervisor, SupervisorConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FakeBackend:
    """Launches ``tests/serving/fake_vllm.py`` as the engine process."""

    startup_delay: float = 0.0
    exit_code: int | None = None
    name: str = "fake"

    def launch(self, *, base_source: str, served_model_name: str, host: str, port: int) -> EngineLaunch:
        if self.exit_code is not None:
            argv = [
                sys.executable,
                "-c",
                f"print('cannot load {base_source}'); raise SystemExit({self.exit_code})",
            ]
        else:
            argv = [sys.executable, "-m", "tests.serving.fake_vllm", "--host", host, "--port", str(port)]
            argv += ["--served-model-name", served_model_name, "--startup-delay", str(self.startup_delay)]
        return EngineLaunch(argv, {"PYTHONPATH": str(ROOT)}, startup_timeout=30)


def supervisor_with(backend: FakeBackend, tmp_path: Path, **config: float) -> ServingSupervisor:
    return ServingSupervisor(
        SupervisorConfig(backend="cpu", log_dir=tmp_path, **config),  # type: ignore[arg-type]
        cpu_backend=backend,
    )


async def debug_state(url: str) -> dict[str, dict[str, object]]:
    async with httpx.AsyncClient() as http:
        data: dict[str, dict[str, object]] = (await http.get(url + "/debug/state")).json()
        return data


def test_lazy_start_with_loading_signal_then_ready(tmp_path: Path) -> None:
    async def main() -> None:
        supervisor = supervisor_with(
            FakeBackend(startup_delay=1.5), tmp_path, wait_for_ready=0.2, retry_after=7
        )
        try:
            assert supervisor.engines() == []
            with pytest.raises(ModelLoadingError) as loading:
                await supervisor.engine_for("base", "src")
            assert loading.value.status_code == 503 and loading.value.headers == {"Retry-After": "7"}
            assert supervisor.engines()[0].state == EngineState.STARTING
            engine = await supervisor.engine_for("base", "src", wait=20)
            assert engine.state == EngineState.READY and engine.process is not None
            assert await supervisor.engine_for("base", "src", wait=0) is engine  # started once
        finally:
            await supervisor.close()
        assert engine.process is None and supervisor.engines() == []

    asyncio.run(main())


def test_adapter_loads_once_under_concurrent_requests_and_unloads(tmp_path: Path) -> None:
    async def main() -> None:
        supervisor = supervisor_with(FakeBackend(), tmp_path)
        try:
            engine = await supervisor.engine_for("base", "src", wait=20)
            await asyncio.gather(
                *(supervisor.ensure_adapter(engine, "lora-x", str(tmp_path), model="ft:x") for _ in range(6))
            )
            state = await debug_state(engine.base_url)
            assert state["load_calls"] == {"lora-x": 1} and engine.adapters == {"lora-x": str(tmp_path)}
            assert await supervisor.unload_adapter("lora-x") == 1
            assert (await debug_state(engine.base_url))["loras"] == {} and engine.adapters == {}
            assert await supervisor.unload_adapter("lora-x") == 0
        finally:
            await supervisor.close()

    asyncio.run(main())


def test_dead_engine_is_restarted_and_forgets_adapters(tmp_path: Path) -> None:
    async def main() -> None:
        supervisor = supervisor_with(FakeBackend(), tmp_path, health_interval=0.2)
        try:
            engine = await supervisor.engine_for("base", "src", wait=20)
            await supervisor.ensure_adapter(engine, "lora-x", str(tmp_path), model="ft:x")
            assert engine.process is not None
            old_pid = engine.process.pid
            os.killpg(old_pid, signal.SIGKILL)
            for _ in range(100):  # the monitor notices within a health interval
                await asyncio.sleep(0.1)
                if engine.restarts:
                    break
            assert engine.restarts == 1 and engine.adapters == {}
            again = await supervisor.engine_for("base", "src", wait=20)
            assert again is engine and engine.process is not None and engine.process.pid != old_pid
            assert await engine.client.health()  # type: ignore[union-attr]
        finally:
            await supervisor.close()

    asyncio.run(main())


def test_engine_that_cannot_start_reports_why(tmp_path: Path) -> None:
    async def main() -> None:
        supervisor = supervisor_with(FakeBackend(exit_code=3), tmp_path)
        try:
            with pytest.raises(EngineUnavailableError, match="exited with code 3") as caught:
                await supervisor.engine_for("base", "bad-source", wait=20)
            assert "cannot load bad-source" in caught.value.message  # the log tail travels with the error
            with pytest.raises(EngineUnavailableError) as again:  # within the back-off: fail fast
                await supervisor.engine_for("base", "bad-source", wait=20)
            assert "Retry-After" in again.value.headers
        finally:
            await supervisor.close()

    asyncio.run(main())


def test_service_reloads_an_adapter_the_engine_lost(tmp_path: Path) -> None:
    public = "ft:base:org:s:ftjob-1"
    lora = engine_lora_name(public)

    async def main() -> None:
        supervisor = supervisor_with(FakeBackend(), tmp_path)
        registry = ModelRegistry(
            {"base": "src"}, lambda mid: FineTunedRecord(mid, "base", tmp_path) if mid == public else None
        )
        service = ServingService(registry, supervisor, EngineProxy())
        body = {"model": public, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        try:
            first = await service.chat_completions(body)
            assert isinstance(first, ProxyResponse) and b'"model":"' + public.encode() + b'"' in first.content
            engine = supervisor.engines()[0]
            async with httpx.AsyncClient() as http:  # the engine drops it behind our back
                await http.post(engine.base_url + "/v1/unload_lora_adapter", json={"lora_name": lora})
            second = await service.chat_completions(body)
            assert isinstance(second, ProxyResponse) and second.status_code == 200
            assert (await debug_state(engine.base_url))["load_calls"] == {lora: 2}
            assert await service.unload(public) == 1
            assert service.status()[0]["adapters"] == []
        finally:
            await service.close()

    asyncio.run(main())
