"""One job on several processes: the launch (``torch.distributed.run``), which rank this process is, and the
rules that keep N ranks one job: one voice (rank 0 reports and writes), one decision (stops and verdicts are
taken on rank 0 and broadcast), every rank at the same collective points.

Data parallelism itself is TRL's and HF Trainer's (accelerate): under a launch each trainer shards its batches
and all-reduces gradients. What this module adds is what the pipeline around those trainers needs:

- :class:`World` / :func:`current`: rank, local rank and world size from the launcher's environment; a plain
  process is a world of one, and every helper here is then a no-op (the single-process path is unchanged).
- :func:`launch_command` / :func:`run_distributed`: ``python -m torch.distributed.run`` with a static rendezvous
  (a master address and port shared by all nodes), gloo on CPU and NCCL on CUDA, ``CUDA_VISIBLE_DEVICES`` from
  a list of GPUs; SIGTERM of the parent stops every rank, and torchrun stops all ranks when one dies.
- :func:`broadcast`, :func:`gather_to_main`, :func:`all_gather`, :func:`barrier`, :func:`on_main`: object
  collectives (pickled; for small results: rows, metrics, decisions, not tensors).
- :class:`MainOnlySink` and :func:`main_only`: events and file writes on rank 0 only.
- :class:`CollectiveStopper`: pause, cancel and the time budget decided on rank 0 at step boundaries and obeyed by
  every rank at the same step.

HF Trainer's own saving (``save_model``, optimizer, RNG state) must still be called on every rank: it decides
internally who writes (rank 0 for DDP; every rank its shard for DeepSpeed ZeRO-3 and FSDP), and each rank writes
its own ``rng_state_<rank>.pth``. ``trainer.resume.StateStore.save_trainer`` does that into one shared directory.

Torch is imported lazily: the launcher side (the CLI, a Celery worker) does not need it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from trainer.control import Stopper, StopRequested
from trainer.interface import Control, EventSink, StopRequest, TrainerError

Backend = Literal["gloo", "nccl"]
Strategy = Literal["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]

BACKEND_ENV = "OPENRFT_DIST_BACKEND"
"""Set by the launcher for the ranks: the process group's backend (default: nccl with CUDA, else gloo)."""
CONTROL_FILE_ENV = "OPENRFT_CONTROL_FILE"
"""Set by the launcher for the ranks: the file through which the parent asks rank 0 to pause or cancel."""

COLLECTIVE_TIMEOUT = datetime.timedelta(hours=4)
"""How long a rank waits in a collective. Long, because the other ranks wait while rank 0 alone runs a phase
(synthesis, a teacher, an evaluation of its own); a rank that dies is noticed by torchrun, not by this timeout."""

CONFIG_DIR = Path(__file__).parent / "distributed_configs"
"""The DeepSpeed and FSDP configurations the sharding strategies use (documented in its README.md)."""

T = TypeVar("T")
P = ParamSpec("P")


# ---------------------------------------------------------------------------------------------------------------
# Which rank this is
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """This process's place in the job: global rank, rank on its node, and the number of ranks in all."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports, writes files and talks to the service."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def from_env(env: Mapping[str, str]) -> World:
        """Read torchrun's / accelerate's variables (RANK, LOCAL_RANK, WORLD_SIZE); absent: a world of one."""
        try:
            size = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError as e:
            raise ValueError(f"bad distributed environment (RANK/LOCAL_RANK/WORLD_SIZE): {e}") from None
        if size < 1 or not 0 <= rank < size or local < 0:
            raise ValueError(
                f"bad distributed environment: RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={size}"
            )
        return World(rank=rank, local_rank=local, world_size=size)


def current() -> World:
    """The world of this process, from its environment."""
    return World.from_env(os.environ)


def inside_launch(env: Mapping[str, str] | None = None) -> bool:
    """True in a rank started by torchrun or accelerate (which must not launch again)."""
    env = os.environ if env is None else env
    return "LOCAL_RANK" in env and "WORLD_SIZE" in env


# ---------------------------------------------------------------------------------------------------------------
# The process group and object collectives (identity in a world of one)
# ---------------------------------------------------------------------------------------------------------------


def ensure_group(world: World | None = None, *, backend: Backend | None = None) -> None:
    """Start the default process group if no one did yet (HF Trainer and accelerate then reuse it).

    Call it at the start of a rank, before any collective: the group gets :data:`COLLECTIVE_TIMEOUT` (HF's own
    would be 30 minutes, shorter than a synthesis phase that other ranks wait through)."""
    world = world or current()
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    chosen = backend or os.environ.get(BACKEND_ENV) or ("nccl" if torch.cuda.is_available() else "gloo")
    if chosen == "nccl":
        torch.cuda.set_device(world.local_rank)  # NCCL's object collectives use the current device
    dist.init_process_group(
        backend=chosen, rank=world.rank, world_size=world.world_size, timeout=COLLECTIVE_TIMEOUT
    )
    # Left to the interpreter's exit, the group's threads abort the process now and then ("terminate called
    # without an active exception"): a rank that finished would read as a crash.
    atexit.register(_destroy_group)


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(obj: T, world: World | None = None, *, src: int = 0) -> T:
    """Every rank returns rank ``src``'s ``obj`` (what the others pass is ignored)."""
    world = world or current()
    if not world.distributed:
        return obj
    import torch.distributed as dist

    ensure_group(world)
    box = [obj if world.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def gather_to_main(obj: T, world: World | None = None) -> list[T] | None:
    """Rank 0 gets every rank's ``obj`` in rank order; the others get None."""
    world = world or current()
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    ensure_group(world)
    out: list[Any] | None = [None] * world.world_size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather(obj: T, world: World | None = None) -> list[T]:
    """Every rank gets every rank's ``obj`` in rank order."""
    world = world or current()
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    ensure_group(world)
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World | None = None) -> None:
    """Wait until every rank is here (e.g. before reading what rank 0 wrote)."""
    world = world or current()
    if not world.distributed:
        return
    import torch.distributed as dist

    ensure_group(world)
    dist.barrier()


def shard(items: Sequence[T], world: World | None = None) -> list[T]:
    """This rank's share of ``items`` (every world_size-th, from its rank): what it evaluates or generates."""
    world = world or current()
    return list(items[world.rank :: world.world_size])


def padded_shard(items: Sequence[T], world: World | None = None) -> tuple[list[T], list[T]]:
    """This rank's share and the padding that brings it to the longest share's length (copies of ``items[0]``):
    with sharded weights every forward is a collective, so every rank must generate as often."""
    world = world or current()
    mine = shard(items, world)
    longest = -(-len(items) // world.world_size)
    return mine, [items[0]] * (longest - len(mine)) if items else []


def shards_weights(strategy: str, world: World | None = None) -> bool:
    """Whether the ranks hold only a shard of the weights (ZeRO-3, FSDP): then every forward pass, so every
    generation, takes all ranks in step, and a rank can never generate alone. ZeRO-2 and DDP keep the weights."""
    world = world or current()
    return world.distributed and strategy in ("deepspeed_zero3", "fsdp")


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """The inverse of :func:`shard` on the gathered shares: the items back in their original order."""
    out: list[T] = []
    longest = max((len(p) for p in parts), default=0)
    for i in range(longest):
        out.extend(p[i] for p in parts if i < len(p))
    return out


def per_rank(total: int, world: World | None = None, *, what: str = "batch") -> int:
    """Split a global batch over the ranks (the same global batch, so the same optimization, on any world)."""
    world = world or current()
    if total % world.world_size:
        raise TrainerError(
            f"The {what} ({total}) does not split evenly over {world.world_size} processes; choose a batch "
            f"that is a multiple of openrft.distributed.processes.",
            code="invalid_hyperparameters",
            param="openrft.distributed.processes",
        )
    return total // world.world_size


def main_only(fn: Callable[P, T]) -> Callable[P, T | None]:
    """Wrap ``fn`` to run on rank 0 only (a file write, an event); other ranks return None at once."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | None:
        return fn(*args, **kwargs) if current().is_main else None

    return wrapper


def on_main(fn: Callable[[], T], *, world: World | None = None, stopper: Stopper | None = None) -> T:
    """Run ``fn`` on rank 0 alone and give every rank its result, or raise on every rank what it raised.

    For a phase one process does for all (synthesis, the RL probe): the other ranks wait in the broadcast.
    Inside, a :class:`CollectiveStopper` takes rank 0's stops at once (per token, as in one process), since no
    other rank is between collectives then."""
    world = world or current()
    if not world.distributed:
        return fn()
    outcome: tuple[str, Any] | None = None
    if world.is_main:
        phase = stopper.main_phase() if isinstance(stopper, CollectiveStopper) else contextlib.nullcontext()
        try:
            with phase:
                outcome = ("ok", fn())
        except StopRequested as e:
            outcome = ("stop", (e.kind, e.reason))
        except TrainerError as e:
            outcome = ("error", (e.message, e.code, e.param))
        except Exception as e:
            outcome = ("crash", f"{type(e).__name__}: {e}")
            broadcast(outcome, world)
            raise
    kind, value = broadcast(outcome, world)  # type: ignore[misc]
    if kind == "ok":
        return value
    if kind == "stop":
        raise StopRequested(*value)
    if kind == "error":
        raise TrainerError(value[0], code=value[1], param=value[2])
    raise RuntimeError(f"rank 0 failed: {value}")


# ---------------------------------------------------------------------------------------------------------------
# One voice, one decision
# ---------------------------------------------------------------------------------------------------------------


class MainOnlySink:
    """An EventSink that forwards on rank 0 and drops events elsewhere (every rank runs the same code)."""

    def __init__(self, sink: EventSink, world: World | None = None) -> None:
        self.sink = sink
        self.world = world or current()

    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        if self.world.is_main:
            self.sink.message(text, level=level)

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        if self.world.is_main:
            self.sink.metrics(text, data)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        if self.world.is_main:
            self.sink.checkpoint_saved(step, path, metrics)

    def checkpoint_removed(self, step: int) -> None:
        if self.world.is_main:
            self.sink.checkpoint_removed(step)

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        if self.world.is_main:
            self.sink.estimate(finish_at, step=step, total_steps=total_steps)


def main_sink(sink: EventSink, world: World | None = None) -> EventSink:
    """``sink`` itself in a world of one (or already wrapped), else a :class:`MainOnlySink` around it."""
    world = world or current()
    return sink if not world.distributed or isinstance(sink, MainOnlySink) else MainOnlySink(sink, world)


class CollectiveStopper(Stopper):
    """A Stopper whose step-boundary check is one decision for all ranks.

    ``requested(budget=True)`` (the pipeline calls it once per optimizer step, on every rank) is a collective:
    rank 0 polls the service's Control and its own clock, and every rank gets its answer, so all stop after the
    same step. Checks inside a forward or generation (``budget=False``) answer None: one rank raising in the
    middle of a step would leave the others blocked in the step's gradient all-reduce. Inside
    :meth:`main_phase` (rank 0 working alone, see :func:`on_main`) rank 0's checks are local and immediate.
    """

    def __init__(
        self, control: Control | None = None, *, max_minutes: float | None = None, world: World
    ) -> None:
        super().__init__(control, max_minutes=max_minutes)
        self.world = world
        self._alone = 0

    def requested(self, *, budget: bool = True) -> StopRequested | None:
        if self._alone:
            return super().requested(budget=budget) if self.world.is_main else None
        if not budget or self.suspended:
            return None
        local = super().requested(budget=True) if self.world.is_main else None
        agreed = broadcast((local.kind, local.reason) if local is not None else None, self.world)
        return StopRequested(*agreed) if agreed is not None else None

    @contextlib.contextmanager
    def main_phase(self) -> Iterator[None]:
        """Rank 0 works alone inside: its stops are taken at once, with no collective."""
        self._alone += 1
        try:
            yield
        finally:
            self._alone -= 1


def make_stopper(
    control: Control | None, *, max_minutes: float | None, world: World | None = None
) -> Stopper:
    """The run's Stopper: a plain one in a world of one, else a :class:`CollectiveStopper`."""
    world = world or current()
    if not world.distributed:
        return Stopper(control, max_minutes=max_minutes)
    return CollectiveStopper(control, max_minutes=max_minutes, world=world)


class FileControl:
    """A Control read from a file the launching process writes ("pause" or "cancel"): how a parent that is not
    rank 0 (the CLI, a worker) reaches the job. Read at most every ``every_s`` seconds (polls must be cheap)."""

    def __init__(self, path: Path, *, every_s: float = 0.5) -> None:
        self.path = path
        self.every_s = every_s
        self._read_at = 0.0
        self._last: StopRequest | None = None

    def poll(self) -> StopRequest | None:
        now = time.monotonic()
        if now - self._read_at >= self.every_s:
            self._read_at = now
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text in ("pause", "cancel"):
                self._last = text  # type: ignore[assignment]
        return self._last


def bind_to_parent() -> None:
    """Die with the launcher (Linux): a rank must not outlive a torchrun that was SIGKILLed. torchrun starts
    each rank in a session of its own, so killing the launcher's process group would not reach them."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        if os.getppid() == 1:  # the launcher died before the call above
            os._exit(1)


# ---------------------------------------------------------------------------------------------------------------
# The launch
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How to start a job's ranks: ``processes`` on this node, ``nnodes`` nodes meeting at one address.

    ``gpus``: the devices this launch may use (CUDA_VISIBLE_DEVICES); ``processes`` then defaults to one per GPU.
    ``backend``: None picks NCCL when GPUs are given and gloo otherwise."""

    processes: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    gpus: tuple[int, ...] | None = None
    backend: Backend | None = None

    def __post_init__(self) -> None:
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} is not in 0..{self.nnodes - 1}")
        if self.processes is not None and self.processes < 1:
            raise ValueError("processes must be at least 1")
        if self.gpus is not None and not self.gpus:
            raise ValueError("gpus is an empty list: give at least one device, or None for the CPU")
        if self.gpus is not None and self.processes is not None and self.processes > len(self.gpus):
            raise ValueError(f"{self.processes} processes need as many GPUs; {len(self.gpus)} given")
        if not 0 < self.master_port < 65536:
            raise ValueError(f"master_port {self.master_port} is not a port")

    @property
    def nproc(self) -> int:
        if self.processes is not None:
            return self.processes
        return len(self.gpus) if self.gpus else 1

    @property
    def chosen_backend(self) -> Backend:
        return self.backend or ("nccl" if self.gpus else "gloo")


def launch_command(args: Sequence[str], launch: Launch, *, module: str | None = "trainer") -> list[str]:
    """The ``python -m torch.distributed.run`` command that starts ``python -m <module> <args>`` (or the script
    ``args[0]`` when ``module`` is None) on every rank of this node, with a static rendezvous."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={launch.nnodes}",
        f"--node-rank={launch.node_rank}",
        f"--nproc-per-node={launch.nproc}",
        "--rdzv-backend=static",
        f"--master-addr={launch.master_addr}",
        f"--master-port={launch.master_port}",
        "--max-restarts=0",  # a failed job is re-queued and resumed by the service, not restarted in place
    ]
    if module is not None:
        cmd += ["-m", module]
    return [*cmd, *args]


def launch_env(launch: Launch, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ranks' environment: the backend, the visible GPUs, and on the CPU the cores split between ranks."""
    env = dict(os.environ if base is None else base)
    env[BACKEND_ENV] = launch.chosen_backend
    if launch.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in launch.gpus)
    elif "OMP_NUM_THREADS" not in env:
        # N ranks each using every core oversubscribe the CPU (torchrun's own default is 1 thread per rank).
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // launch.nproc))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see trainer.run_job
    return env


def run_distributed(
    args: Sequence[str],
    launch: Launch,
    *,
    module: str | None = "trainer",
    control_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    grace_s: float = 40.0,
) -> int:
    """Run the ranks to their end; returns torchrun's exit status (non-zero when any rank failed).

    SIGTERM (a worker shutting down, a revoked task) is forwarded to torchrun, which stops its ranks; after
    ``grace_s`` it is killed, and its ranks die with it (:func:`bind_to_parent`). With ``control_file``, the
    first SIGINT asks rank 0 to pause through the file and the second to cancel (see :class:`FileControl`).
    """
    child_env = launch_env(launch, env)
    if control_file is not None:
        control_file.parent.mkdir(parents=True, exist_ok=True)
        control_file.write_text("")
        child_env[CONTROL_FILE_ENV] = str(control_file)
    # A session of its own: the terminal's Ctrl-C reaches this process only, which turns it into a pause.
    proc = subprocess.Popen(
        launch_command(args, launch, module=module), env=child_env, start_new_session=True
    )
    stopping = threading.Event()

    def stop_all() -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def on_term(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=stop_all, daemon=True).start()

    def on_int(signum: int, frame: object) -> None:
        if control_file is None:
            on_term(signum, frame)
            return
        asked = control_file.read_text().strip() if control_file.exists() else ""
        request = "cancel" if asked == "pause" else "pause"
        control_file.write_text(request)
        print(f"\n[control] {request} requested", file=sys.stderr, flush=True)

    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
        handlers[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
    try:
        return proc.wait()
    except BaseException:
        stop_all()
        raise
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------------------------
# Sharding strategies (HF TrainingArguments fields)
# ---------------------------------------------------------------------------------------------------------------


def strategy_args(strategy: Strategy) -> dict[str, Any]:
    """TrainingArguments fields for a strategy, to pass to TRL's SFTConfig / GRPOConfig on every rank.

    ddp: each rank holds the whole model; with LoRA every trainable parameter gets a gradient, so DDP's per-step
    search for unused parameters is turned off. The others shard parameters, gradients and optimizer state over
    the GPUs (CUDA only; ``trainer.config`` refuses them on the CPU)."""
    if strategy == "ddp":
        return {"ddp_find_unused_parameters": False}
    if strategy in ("deepspeed_zero2", "deepspeed_zero3"):
        return {"deepspeed": str(CONFIG_DIR / f"{strategy}.json")}
    if strategy == "fsdp":
        fsdp = json.loads((CONFIG_DIR / "fsdp.json").read_text())
        return {"fsdp": fsdp.pop("fsdp"), "fsdp_config": fsdp}
    raise ValueError(f"unknown distributed strategy {strategy!r}")
