"""One inference engine process per base model: started on first use, health-checked, restarted if it dies.

The engine is the CPU server or vLLM (``backend``: auto | cpu | vllm). A request that arrives while its
engine (or its adapter) is loading waits up to ``wait_for_ready`` seconds and then gets
:class:`~serving.errors.ModelLoadingError` (the route answers 503 with ``Retry-After``); the load goes on
in the background and the retry finds it done. Adapters are loaded on first use, once per name even under
concurrent requests, and unloaded when their model is deleted; an adapter whose files changed (a new path,
or new weights at the same path) is loaded again in place. GPU engines get a device and memory share from
a :class:`~serving.gpus.GpuPlanner`, and an engine that does not fit is refused before it starts.
Everything here runs on the API's event loop and never blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from serving.backends import CPU, ENGINE_KEY_ENV, CpuBackend, EngineBackend, choose_backend
from serving.engine_client import EngineClient
from serving.errors import EngineUnavailableError, ModelLoadingError
from serving.gpus import GpuPlanner, Placement, visible_devices
from serving.vllm_backend import VllmBackend

log = logging.getLogger("openrft.serving.supervisor")


class EngineState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class SupervisorConfig:
    backend: str = "auto"
    """auto, or the name of a registered backend (cpu, vllm)."""
    host: str = "127.0.0.1"
    log_dir: Path | None = None
    wait_for_ready: float = 10.0
    """How long a request waits for a loading engine or adapter before it gets a 'loading' 503."""
    retry_after: int = 10
    health_interval: float = 5.0
    health_failures_before_restart: int = 3
    max_restart_backoff: float = 60.0
    gpus: list[str] | None = None
    """CUDA devices vLLM engines may use; None: every device visible to this process."""
    gpu_memory_utilization: float = 0.85
    """Share of each serving GPU's memory that its engines take together."""
    engines_per_gpu: int = 1
    cpu_models: frozenset[str] = frozenset()
    """Base models served by the CPU engine whatever the backend (a small built-in model need not hold a GPU)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()


@dataclass(eq=False)
class ManagedEngine:
    base_model: str
    base_source: str
    backend: EngineBackend
    state: EngineState = EngineState.STARTING
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    client: EngineClient | None = None
    log_path: Path | None = None
    started: asyncio.Future[None] | None = None
    last_error: str | None = None
    failed_at: float = 0.0
    restarts: int = 0
    health_failures: int = 0
    adapters: dict[str, str] = field(default_factory=dict)
    """Adapters the running process has loaded: engine name -> version (path and weights' stamp)."""
    placement: Placement | None = None
    adapter_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    start_task: asyncio.Task[None] | None = None
    _log_file: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.client is None:
            raise EngineUnavailableError(f"The engine of '{self.base_model}' is not running.")
        return self.client.base_url

    @property
    def headers(self) -> dict[str, str]:
        """What a request to this engine carries: its per-start secret."""
        return self.client.headers if self.client is not None else {}

    def describe(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "backend": self.backend.name,
            "state": self.state.value,
            "port": self.port,
            "pid": self.process.pid if self.process else None,
            "restarts": self.restarts,
            "adapters": sorted(self.adapters),
            "gpu": self.placement.cuda_visible_devices if self.placement else None,
            "gpu_memory_utilization": self.placement.memory_utilization if self.placement else None,
            "last_error": self.last_error,
        }


class ServingSupervisor:
    def __init__(
        self,
        config: SupervisorConfig | None = None,
        *,
        backends: Mapping[str, EngineBackend] | None = None,
        cpu_backend: EngineBackend | None = None,
        vllm_backend: EngineBackend | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config or SupervisorConfig()
        # The engine backends by name (config.backend picks one); cpu_backend and vllm_backend fill those two
        # names, for callers that replace only one of them.
        self._backends: dict[str, EngineBackend] = dict(
            backends or {CPU: CpuBackend(), "vllm": VllmBackend()}
        )
        for name, given in ((CPU, cpu_backend), ("vllm", vllm_backend)):
            if given is not None:
                self._backends[name] = given
        self._backends.setdefault(CPU, CpuBackend())
        self._backend: EngineBackend | None = None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(30.0), trust_env=False)
        self._own_http = http is None
        self._engines: dict[str, ManagedEngine] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._planner: GpuPlanner | None = None
        self._closed = False
        self.log_dir = self.config.log_dir or Path(tempfile.gettempdir()) / "openrft-engines"

    # -- backend choice --------------------------------------------------------------------------------
    async def backend(self) -> EngineBackend:
        backend = self._backend
        if backend is None:
            # Probing CUDA runs a child process: keep it off the event loop.
            kind = await asyncio.to_thread(choose_backend, self.config.backend, tuple(self._backends))
            backend = self._backend = self._backends[kind]
            log.info("serving backend: %s (setting %s)", kind, self.config.backend)
        return backend

    async def planner(self) -> GpuPlanner:
        if self._planner is None:
            devices = self.config.gpus
            if devices is None:
                devices = await asyncio.to_thread(visible_devices)
            self._planner = GpuPlanner(
                list(devices),
                memory_utilization=self.config.gpu_memory_utilization,
                engines_per_gpu=self.config.engines_per_gpu,
            )
            log.info(
                "serving GPUs: %s, %d engine(s) each at %.2f of its memory",
                ",".join(devices) or "none",
                self.config.engines_per_gpu,
                self._planner.share,
            )
        return self._planner

    # -- engines -------------------------------------------------------------------------------------------
    def engines(self) -> list[ManagedEngine]:
        return list(self._engines.values())

    async def engine_for(
        self, base_model: str, base_source: str, *, wait: float | None = None
    ) -> ManagedEngine:
        """The ready engine of ``base_model``, starting it if needed; raises ModelLoadingError while loading."""
        if self._closed:
            raise EngineUnavailableError("The serving layer is shutting down.")
        self._ensure_monitor()
        engine = self._engines.get(base_model)
        if engine is None:
            backend = self._backends[CPU] if base_model in self.config.cpu_models else await self.backend()
            planner = await self.planner() if backend.uses_gpu else None
            if base_model in self._engines:  # another request created it while we probed the backend
                engine = self._engines[base_model]
            else:
                engine = ManagedEngine(base_model, base_source, backend)
                if planner is not None:
                    engine.placement = planner.place(base_model)  # raises GpuCapacityError when full
                self._engines[base_model] = engine
                self._spawn(engine)
        elif engine.state == EngineState.FAILED:
            if time.monotonic() - engine.failed_at < self._backoff(engine):
                raise EngineUnavailableError(
                    f"The inference engine of '{base_model}' failed to start: {engine.last_error}",
                    headers={"Retry-After": str(int(self._backoff(engine)) + 1)},
                )
            engine.restarts += 1
            self._spawn(engine)
        if engine.state == EngineState.READY:
            return engine
        assert engine.started is not None
        try:
            await asyncio.wait_for(asyncio.shield(engine.started), self._wait(wait))
        except TimeoutError:
            raise ModelLoadingError(
                base_model, "starting the inference engine", retry_after=self.config.retry_after
            ) from None
        except EngineUnavailableError:
            raise
        except Exception as exc:
            raise EngineUnavailableError(
                f"The inference engine of '{base_model}' failed to start: {exc}"
            ) from exc
        return engine

    def _wait(self, wait: float | None) -> float:
        return self.config.wait_for_ready if wait is None else wait

    def _backoff(self, engine: ManagedEngine) -> float:
        return float(min(self.config.max_restart_backoff, 2.0 ** min(engine.restarts, 10)))

    @staticmethod
    def _start_future() -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Nobody may be waiting when a start fails; mark the exception retrieved to keep the loop quiet.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def _spawn(self, engine: ManagedEngine, future: asyncio.Future[None] | None = None) -> None:
        engine.state = EngineState.STARTING
        engine.adapters.clear()
        engine.health_failures = 0
        future = future if future is not None and not future.done() else self._start_future()
        engine.started = future
        task = asyncio.create_task(self._start(engine, future), name=f"start-engine-{engine.base_model}")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        engine.start_task = task

    async def _start(self, engine: ManagedEngine, future: asyncio.Future[None]) -> None:
        try:
            await self._launch(engine)
        except BaseException as exc:
            engine.state = EngineState.FAILED
            engine.failed_at = time.monotonic()
            engine.last_error = str(exc)
            await self._kill(engine)
            log.error("engine of %s failed to start: %s", engine.base_model, exc)
            if not future.done():
                future.set_exception(
                    exc if isinstance(exc, EngineUnavailableError) else EngineUnavailableError(str(exc))
                )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        engine.state = EngineState.READY
        engine.last_error = None
        if not future.done():
            future.set_result(None)

    async def _launch(self, engine: ManagedEngine) -> None:
        host = self.config.host
        engine.port = free_port(host)
        spec = engine.backend.launch(
            base_source=engine.base_source,
            served_model_name=engine.base_model,
            host=host,
            port=engine.port,
            placement=engine.placement,
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in engine.base_model)
        engine.log_path = self.log_dir / f"engine-{safe}.log"
        engine._log_file = engine.log_path.open("ab")
        engine._log_file.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(spec.argv)}\n".encode())
        engine._log_file.flush()
        secret = secrets.token_urlsafe(32)
        log.info("starting %s engine for %s on port %d", engine.backend.name, engine.base_model, engine.port)
        engine.process = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=engine._log_file,
            stderr=asyncio.subprocess.STDOUT,
            # A secret per start, in the environment (not the command line other local users can read): the engine
            # answers only the API that started it (vLLM reads VLLM_API_KEY; the CPU engine its own variable).
            env={**os.environ, **spec.env, ENGINE_KEY_ENV: secret, "VLLM_API_KEY": secret},
            start_new_session=True,  # its own process group: we can stop it with everything it spawned
        )
        engine.client = EngineClient(f"http://{host}:{engine.port}", self._http, api_key=secret)
        deadline = time.monotonic() + spec.startup_timeout
        exited = asyncio.create_task(engine.process.wait())
        try:
            while True:
                if await engine.client.health(deadline=2.0):
                    return
                if exited.done():
                    tail = _log_tail(engine.log_path)
                    raise EngineUnavailableError(
                        f"the {engine.backend.name} engine exited with code {engine.process.returncode}"
                        + (f"; last log lines:\n{tail}" if tail else "")
                    )
                if time.monotonic() > deadline:
                    raise EngineUnavailableError(
                        f"the engine was not healthy after {spec.startup_timeout:.0f} s"
                    )
                await asyncio.wait({exited}, timeout=0.5)
        finally:
            if not exited.done():
                exited.cancel()

    async def _kill(self, engine: ManagedEngine, *, grace: float = 10.0) -> None:
        process, engine.process = engine.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for task in engine.adapter_tasks.values():
            task.cancel()
        engine.adapter_tasks.clear()
        engine.adapters.clear()
        if engine._log_file is not None:
            engine._log_file.close()
            engine._log_file = None

    async def restart(self, engine: ManagedEngine, reason: str) -> None:
        """Start ``engine`` again, once: concurrent health checks that all found it dead (a burst of requests
        that failed together asks for one each) make one new process, not one each."""
        if engine.state != EngineState.READY:
            return  # already being restarted (or stopped)
        # Requests from now on wait for the new process, not for the old one being stopped.
        engine.state = EngineState.STARTING
        engine.started = future = self._start_future()
        log.warning("restarting the engine of %s: %s", engine.base_model, reason)
        engine.last_error = reason
        await self._kill(engine)
        engine.restarts += 1
        self._spawn(engine, future)

    async def check(self, engine: ManagedEngine) -> bool:
        """Health-check ``engine`` now; restarts it when it died or failed too many checks in a row."""
        if engine.state != EngineState.READY:
            return engine.state == EngineState.READY
        if engine.process is None or engine.process.returncode is not None:
            code = engine.process.returncode if engine.process else None
            await self.restart(engine, f"the engine process exited (code {code})")
            return False
        assert engine.client is not None
        if await engine.client.health():
            engine.health_failures = 0
            return True
        engine.health_failures += 1
        if engine.health_failures >= self.config.health_failures_before_restart:
            await self.restart(engine, f"{engine.health_failures} failed health checks")
        return False

    def _ensure_monitor(self) -> None:
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._monitor_loop(), name="engine-monitor")

    async def _monitor_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.config.health_interval)
            for engine in list(self._engines.values()):
                try:
                    await self.check(engine)
                except Exception:
                    log.exception("health check of %s failed", engine.base_model)

    # -- adapters ------------------------------------------------------------------------------------------
    async def ensure_adapter(
        self,
        engine: ManagedEngine,
        name: str,
        path: str,
        *,
        model: str,
        version: str | None = None,
        wait: float | None = None,
    ) -> None:
        """Make sure ``engine`` has adapter ``name`` loaded from ``path`` (one load per name at a time).

        ``version`` identifies the files (default: the path); a different one than what is loaded reloads
        the adapter in place, so a model whose row now points at new weights never answers with old ones.
        """
        version = version or path
        for _ in range(2):
            if engine.adapters.get(name) == version:
                return
            task = engine.adapter_tasks.get(name)
            if task is None:
                replace = name in engine.adapters
                task = asyncio.create_task(
                    self._load_adapter(engine, name, path, version, replace=replace),
                    name=f"load-adapter-{name}",
                )
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                engine.adapter_tasks[name] = task
            try:
                await asyncio.wait_for(asyncio.shield(task), self._wait(wait))
            except TimeoutError:
                raise ModelLoadingError(
                    model, "loading the fine-tuned adapter", retry_after=self.config.retry_after
                ) from None
            # The load we waited for may have been of an older version: check again, load once more.

    async def _load_adapter(
        self, engine: ManagedEngine, name: str, path: str, version: str, *, replace: bool
    ) -> None:
        try:
            assert engine.client is not None
            await engine.client.load_adapter(name, path, replace=replace)
            engine.adapters[name] = version
        finally:
            if engine.adapter_tasks.get(name) is asyncio.current_task():
                del engine.adapter_tasks[name]

    def forget_adapter(self, engine: ManagedEngine, name: str) -> None:
        """The engine no longer has ``name`` (it said 404): load it again on next use."""
        engine.adapters.pop(name, None)

    async def unload_adapter(self, name: str) -> int:
        """Unload adapter ``name`` from every engine that has it (or is loading it); returns how many did."""
        count = 0
        for engine in list(self._engines.values()):
            task = engine.adapter_tasks.get(name)
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(task)
            if name not in engine.adapters or engine.client is None or engine.state != EngineState.READY:
                continue
            engine.adapters.pop(name, None)
            if await engine.client.unload_adapter(name):
                count += 1
        return count

    # -- shutdown ------------------------------------------------------------------------------------------
    async def stop_engine(self, base_model: str) -> None:
        engine = self._engines.pop(base_model, None)
        if engine is not None:
            if self._planner is not None:
                self._planner.release(base_model)
            engine.state = EngineState.STOPPED
            if engine.start_task is not None and not engine.start_task.done():
                engine.start_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await engine.start_task
            await self._kill(engine)

    async def close(self) -> None:
        self._closed = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for base_model in list(self._engines):
            await self.stop_engine(base_model)
        if self._own_http:
            await self._http.aclose()
