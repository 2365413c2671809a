"""The supervisor with fake engine processes (fast): lazy start, loading signal, adapter loads, restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.backends import EngineLaunch
from serving.errors import EngineUnavailableError, ModelLoadingError
from serving.gpus import GpuCapacityError, GpuPlanner, Placement, visible_devices
from serving.proxy import EngineProxy, ProxyResponse
from serving.registry import FineTunedRecord, ModelRegistry, engine_lora_name, merged_engine_name
from serving.service import ServingService
from serving.supervisor import EngineState, ServingSupervisor, SupervisorConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FakeBackend:
    """Launches ``tests/serving/fake_vllm.py`` as the engine process."""

    startup_delay: float = 0.0
    exit_code: int | None = None
    name: str = "fake"
    uses_gpu: bool = False

    def launch(
        self,
        *,
        base_source: str,
        served_model_name: str,
        host: str,
        port: int,
        placement: Placement | None = None,
    ) -> EngineLaunch:
        if self.exit_code is not None:
            argv = [
                sys.executable,
                "-c",
                f"print('cannot load {base_source}'); raise SystemExit({self.exit_code})",
            ]
        else:
            argv = [sys.executable, "-m", "tests.serving.fake_vllm", "--host", host, "--port", str(port)]
            argv += ["--served-model-name", served_model_name, "--startup-delay", str(self.startup_delay)]
        env = {"PYTHONPATH": str(ROOT), "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        if placement is not None:
            env["CUDA_VISIBLE_DEVICES"] = placement.cuda_visible_devices
        return EngineLaunch(argv, env, startup_timeout=30)


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


def test_gpu_engines_get_a_device_each_and_the_one_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    """Item 4 of the GPU audit: every base model started its own vLLM at 0.85 on the same GPU."""

    async def main() -> None:
        supervisor = ServingSupervisor(
            SupervisorConfig(backend="vllm", log_dir=tmp_path, gpus=["3", "5"], gpu_memory_utilization=0.8),
            vllm_backend=FakeBackend(uses_gpu=True),
        )
        try:
            a = await supervisor.engine_for("a", "src-a", wait=20)
            b = await supervisor.engine_for("b", "src-b", wait=20)
            seen = {(await debug_state(e.base_url))["cuda_visible_devices"] for e in (a, b)}
            assert seen == {"3", "5"}
            assert a.placement is not None and a.placement.memory_utilization == 0.8
            with pytest.raises(GpuCapacityError, match="OPENRFT_SERVING_ENGINES_PER_GPU") as caught:
                await supervisor.engine_for("c", "src-c", wait=20)
            assert caught.value.status_code == 503 and "GPU 3: a" in caught.value.message
            assert [e.base_model for e in supervisor.engines()] == ["a", "b"]  # nothing was started for c
            await supervisor.stop_engine("a")  # its place is free again
            c = await supervisor.engine_for("c", "src-c", wait=20)
            assert c.placement == a.placement
        finally:
            await supervisor.close()

    asyncio.run(main())


def test_two_engines_share_a_gpu_only_when_configured_and_split_its_memory() -> None:
    planner = GpuPlanner(["0"], memory_utilization=0.9, engines_per_gpu=2)
    first, second = planner.place("a"), planner.place("b")
    assert first == second == Placement(("0",), 0.45)
    assert planner.place("a") == first  # idempotent per engine
    with pytest.raises(GpuCapacityError):
        planner.place("c")
    with pytest.raises(GpuCapacityError, match="no CUDA device"):
        GpuPlanner([]).place("a")
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_adapter_with_new_files_is_reloaded_in_place(tmp_path: Path) -> None:
    """Item 10: a model row moved to new weights kept answering with the old ones."""
    public = "ft:base:org:s:ftjob-2"
    lora = engine_lora_name(public)
    where = {"path": tmp_path / "ckpt-a"}
    for name in ("ckpt-a", "ckpt-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text('{"r": 8}')
        (tmp_path / name / "adapter_model.safetensors").write_bytes(b"x")

    async def main() -> None:
        supervisor = supervisor_with(FakeBackend(), tmp_path)
        registry = ModelRegistry({"base": "src"}, lambda mid: FineTunedRecord(mid, "base", where["path"]))
        service = ServingService(registry, supervisor, EngineProxy())
        body = {"model": public, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        try:
            await service.chat_completions(body)
            engine = supervisor.engines()[0]
            await service.chat_completions(body)  # unchanged: no second load
            assert (await debug_state(engine.base_url))["load_calls"] == {lora: 1}
            where["path"] = tmp_path / "ckpt-b"  # the row now points elsewhere
            await service.chat_completions(body)
            state = await debug_state(engine.base_url)
            assert state["loras"] == {lora: str(tmp_path / "ckpt-b")} and state["inplace_calls"] == {lora: 1}
            # Same path, rewritten weights (a resumed job re-saving a step): reloaded too.
            weights = tmp_path / "ckpt-b" / "adapter_model.safetensors"
            weights.write_bytes(b"new weights")
            await service.chat_completions(body)
            assert (await debug_state(engine.base_url))["inplace_calls"] == {lora: 2}
        finally:
            await service.close()

    asyncio.run(main())


def test_merged_weights_are_served_as_a_model_not_an_adapter(tmp_path: Path) -> None:
    """Item 8: merge_weights=true registered a full-weights folder that was then loaded as a LoRA."""
    public = "ft:base:org:s:ftjob-3"
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")

    async def main() -> None:
        supervisor = supervisor_with(FakeBackend(), tmp_path)
        registry = ModelRegistry({"base": "src"}, lambda mid: FineTunedRecord(mid, "base", merged))
        service = ServingService(registry, supervisor, EngineProxy())
        body = {"model": public, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        try:
            result = await service.chat_completions(body)
            assert isinstance(result, ProxyResponse) and result.status_code == 200
            assert json.loads(result.content)["model"] == public
            (engine,) = supervisor.engines()
            assert engine.base_model == merged_engine_name(public) and engine.base_source == str(merged)
            assert (await debug_state(engine.base_url))["load_calls"] == {}
            assert await service.unload(public) == 1 and supervisor.engines() == []
        finally:
            await service.close()

    asyncio.run(main())


def test_cpu_models_hold_no_gpu_place(tmp_path: Path) -> None:
    """The built-in model is offered on every deployment: on vLLM it runs on the CPU engine by default."""

    async def main() -> None:
        supervisor = ServingSupervisor(
            SupervisorConfig(backend="vllm", log_dir=tmp_path, gpus=["0"], cpu_models=frozenset({"small"})),
            cpu_backend=FakeBackend(name="cpu"),
            vllm_backend=FakeBackend(uses_gpu=True, name="vllm"),
        )
        try:
            small = await supervisor.engine_for("small", "src", wait=20)
            big = await supervisor.engine_for("big", "src", wait=20)  # the one GPU is still free for it
            assert (small.backend.name, small.placement) == ("cpu", None)
            assert big.backend.name == "vllm" and big.placement == Placement(("0",), 0.85)
        finally:
            await supervisor.close()

    asyncio.run(main())


def test_the_app_serves_its_built_in_model_on_the_cpu_engine() -> None:
    from app.inference import build_serving
    from core.settings import BUILTIN_BASE_MODELS, Settings

    service = build_serving(Settings(OPENRFT_SERVING_BACKEND="vllm", OPENRFT_SERVING_GPUS="1,2"))
    config = service.supervisor.config
    assert config.cpu_models == frozenset(BUILTIN_BASE_MODELS) and config.gpus == ["1", "2"]
    none = build_serving(Settings(OPENRFT_SERVING_CPU_MODELS=""))
    assert none.supervisor.config.cpu_models == frozenset()


def test_backends_are_a_registry_by_name(tmp_path: Path) -> None:
    """A third backend is one more name: the setting picks it, cpu_models still run on the CPU one."""
    from serving.backends import choose_backend
    from serving.service import BACKENDS

    assert set(BACKENDS) == {"cpu", "vllm"}
    assert choose_backend("tpu", ("cpu", "vllm", "tpu")) == "tpu"
    assert choose_backend("auto", ("cpu",)) == "cpu"  # no vLLM registered: auto never probes for it
    with pytest.raises(ValueError, match="must be auto, cpu or tpu, not 'vllm'"):
        choose_backend("vllm", ("cpu", "tpu"))

    async def main() -> None:
        supervisor = ServingSupervisor(
            SupervisorConfig(backend="tpu", log_dir=tmp_path, cpu_models=frozenset({"small"})),
            backends={"cpu": FakeBackend(name="cpu"), "tpu": FakeBackend(name="tpu")},
        )
        try:
            big = await supervisor.engine_for("big", "src", wait=20)
            small = await supervisor.engine_for("small", "src", wait=20)
            assert (big.backend.name, small.backend.name) == ("tpu", "cpu")
        finally:
            await supervisor.close()

    asyncio.run(main())


@dataclass(frozen=True)
class CountingBackend(FakeBackend):
    """A FakeBackend that records each engine process it launches."""

    launches: list[str] = dataclasses.field(default_factory=list)

    def launch(self, **kwargs: Any) -> EngineLaunch:
        self.launches.append(kwargs["served_model_name"])
        return super().launch(**kwargs)


def test_a_burst_of_failed_calls_restarts_a_hung_engine_once(tmp_path: Path) -> None:
    """A burst of calls on a cold service starts one engine. Then the engine stops answering (hung, not
    dead): each call of the next burst fails and asks for a health check, and all those checks see it fail
    together. Exactly one new engine process is started, and the calls after it are answered by it."""
    backend = CountingBackend(startup_delay=0.5)

    async def main() -> None:
        supervisor = supervisor_with(backend, tmp_path, health_interval=60, wait_for_ready=20)
        service = ServingService(ModelRegistry({"base": "src"}, lambda mid: None), supervisor, EngineProxy())
        body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        try:
            cold = await asyncio.gather(*(service.chat_completions(body) for _ in range(8)))
            assert all(isinstance(r, ProxyResponse) and r.status_code == 200 for r in cold)
            assert backend.launches == ["base"]
            engine = supervisor.engines()[0]
            hung = engine.client
            assert hung is not None and engine.process is not None
            old_pid = engine.process.pid

            async def no_answer(deadline: float = 2.0) -> bool:
                await asyncio.sleep(0.05)
                return False

            hung.health = no_answer  # type: ignore[method-assign]
            checks = await asyncio.gather(*(supervisor.check(engine) for _ in range(8)))
            assert not any(checks)
            again = await asyncio.gather(*(service.chat_completions(body) for _ in range(8)))
            assert all(isinstance(r, ProxyResponse) and r.status_code == 200 for r in again)
            assert backend.launches == ["base", "base"], backend.launches
            assert engine.restarts == 1 and engine.process is not None and engine.process.pid != old_pid
            assert _gone(old_pid)  # the hung process was stopped, not left running beside the new one
        finally:
            await service.close()

    asyncio.run(main())


def _gone(pid: int) -> bool:
    """The process has exited (no such process, or a zombie not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
