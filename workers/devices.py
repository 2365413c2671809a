"""Which GPUs each training slot sees: disjoint groups, one per Celery pool child, set before CUDA starts.

A slot's job runs one process per GPU of its group (``workers.runner``: torchrun through
``trainer.launch.launch_job``, each rank on the device of its LOCAL_RANK, so no process ever drives several GPUs:
transformers would then set ``n_gpu`` from the device count and TRL refuse the DataParallel that follows).
``--gpus 0,1,2,3 --concurrency 1`` gives the one slot all four; ``--concurrency 2`` gives ``0,1`` and ``2,3``.
The groups are equal: a job's global batch is split over its processes, so a job must not run on 2 GPUs in
one slot and 3 in another. GPUs that do not divide evenly (3 GPUs, 2 slots) stay idle, with a warning at start;
fewer GPUs than slots is refused. Each child gets its group through ``CUDA_VISIBLE_DEVICES``, chosen by its
pool index (a replacement child reuses the index of the one it replaces, so a slot keeps its devices across
``--max-tasks-per-child 1`` restarts). A node 1..N-1 of a worker group (``workers.group``) plans its devices
the same way: its one slot's GPUs run its share of the ranks of each job it joins.

``OPENRFT_WORKER_GPUS`` (``openrft worker --gpus``) lists the devices: ``auto`` (default: every device
this worker sees), ``none`` (CPU training), or a comma-separated list of indices or UUIDs. The parent never
initializes CUDA (a forked child could not use it): devices are counted with ``nvidia-smi``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from core.worker_group import is_group_queue
from serving.gpus import parse_devices, visible_devices

log = logging.getLogger("openrft.worker.devices")

ENV = "OPENRFT_WORKER_GPUS"


class DeviceConfigError(ValueError):
    """The worker's GPUs and its concurrency do not fit (raised at worker start, before any job)."""


@dataclass(frozen=True)
class DevicePlan:
    groups: tuple[tuple[str, ...], ...]
    """The devices of the pool's slots, in slot order (equal groups); empty: no GPU assignment (CPU)."""
    concurrency: int

    def for_child(self, index: int) -> str | None:
        """The ``CUDA_VISIBLE_DEVICES`` of pool child ``index``; None leaves the environment as it is."""
        if not self.groups:
            return None
        if not 0 <= index < self.concurrency:
            raise DeviceConfigError(f"pool child {index} is outside the worker's {self.concurrency} slots")
        return ",".join(self.groups[index])

    def describe(self) -> str:
        if not self.groups:
            return "no GPU (CPU training)"
        return ", ".join(
            f"slot {i}: GPU{'s' * (len(g) > 1)} {','.join(g)}" for i, g in enumerate(self.groups)
        )


def plan_devices(
    setting: str | None, concurrency: int, environ: Mapping[str, str] | None = None
) -> DevicePlan:
    """Equal, disjoint groups of devices from ``setting``, one per slot (see the module docstring); refuses
    what cannot work."""
    if concurrency < 1:
        raise DeviceConfigError("concurrency must be >= 1")
    value = (setting or "auto").strip()
    if value.lower() == "none":
        return DevicePlan((), concurrency)
    pool = visible_devices(environ) if value.lower() == "auto" else parse_devices(value)
    if not pool:
        if value.lower() != "auto":
            raise DeviceConfigError(f"{ENV}={setting!r} names no device")
        return DevicePlan((), concurrency)
    if len(set(pool)) != len(pool):
        raise DeviceConfigError(f"{ENV} lists a device twice: {','.join(pool)}")
    if concurrency > len(pool):
        raise DeviceConfigError(
            f"--concurrency {concurrency} needs {concurrency} GPUs (at least one per training job) but this "
            f"worker has {len(pool)} ({','.join(pool)}). Lower --concurrency or list more devices with --gpus."
        )
    size = len(pool) // concurrency
    used = size * concurrency
    if used < len(pool):
        log.warning(
            "worker has %d GPUs (%s) for --concurrency %d: %d per slot, GPUs %s stay idle (slots get equal "
            "groups; list a multiple of --concurrency with --gpus to use them all)",
            len(pool),
            ",".join(pool),
            concurrency,
            size,
            ",".join(pool[used:]),
        )
    groups = tuple(tuple(pool[i * size : (i + 1) * size]) for i in range(concurrency))
    return DevicePlan(groups, concurrency)


def job_placement(requested: int, environ: Mapping[str, str] | None = None) -> tuple[int, list[str]]:
    """How many processes a job runs on, and the GPUs they see (empty: the CPU). On GPU: one process per device
    of this slot, or the job's ``openrft.distributed.processes`` (``requested``) when it asks for 2 up to that
    many; on the CPU: ``requested``."""
    devices = visible_devices(environ)
    if not devices:
        return requested, []
    n = requested if 1 < requested <= len(devices) else len(devices)
    return n, devices[:n]


def assign_child(plan: DevicePlan, index: int, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set this pool child's ``CUDA_VISIBLE_DEVICES`` (before anything initializes CUDA)."""
    env = os.environ if environ is None else environ
    device = plan.for_child(index)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return device


_plan: DevicePlan | None = None


def consumed_queues(worker: object) -> list[str]:
    """The queues a Celery worker consumes (from its WorkController)."""
    app = getattr(worker, "app", None)
    return list(getattr(getattr(getattr(app, "amqp", None), "queues", None), "consume_from", None) or {})


def trains(worker: object) -> bool:
    """Whether the worker runs training ranks: it takes jobs (``gpu``) or joins its group's launches."""
    return any(q == "gpu" or is_group_queue(q) for q in consumed_queues(worker))


def _is_prefork(worker: object) -> bool:
    pool = getattr(worker, "pool_cls", "")
    name = (
        pool
        if isinstance(pool, str)
        else f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', '')}"
    )
    return "prefork" in name or name == "processes"


def on_worker_init(worker: object, environ: Mapping[str, str] | None = None) -> DevicePlan | None:
    """Celery ``worker_init`` (main process, before the pool forks): plan the slots' devices once."""
    global _plan
    env = os.environ if environ is None else environ
    if not (trains(worker) and _is_prefork(worker)):
        return None
    _plan = plan_devices(env.get(ENV), int(getattr(worker, "concurrency", 1) or 1), env)
    log.info("training devices: %s", _plan.describe())
    return _plan


def on_child_init(index: int | None = None, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Celery ``worker_process_init`` (each pool child, before it runs a task): take the slot's device."""
    if _plan is None:
        return None
    if index is None:
        from billiard.process import current_process

        index = int(getattr(current_process(), "index", 0) or 0)
    device = assign_child(_plan, index, environ)
    log.info("pool child %d trains on GPUs %s", index, device)
    return device
