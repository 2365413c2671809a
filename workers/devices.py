"""Which GPU each training process sees: one device per Celery pool child, set before CUDA starts.

Why: with several GPUs visible, transformers sets ``n_gpu`` from the device count and TRL refuses the
DataParallel that follows, so a job fails at trainer construction; and ``--concurrency 2`` would put two
jobs on device 0. Each pool child of a training worker therefore gets exactly one device through
``CUDA_VISIBLE_DEVICES``, chosen by its pool index (a replacement child reuses the index of the one it
replaces, so a slot keeps its device across ``--max-tasks-per-child 1`` restarts). Running one job on
several GPUs is a later step that builds on this.

``OPENRFT_WORKER_GPUS`` (``openrft worker --gpus``) lists the devices: ``auto`` (default: every device
this worker sees), ``none`` (CPU training), or a comma-separated list of indices or UUIDs. The parent never
initializes CUDA (a forked child could not use it): devices are counted with ``nvidia-smi``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from serving.gpus import parse_devices, visible_devices

log = logging.getLogger("openrft.worker.devices")

ENV = "OPENRFT_WORKER_GPUS"


class DeviceConfigError(ValueError):
    """The worker's GPUs and its concurrency do not fit (raised at worker start, before any job)."""


@dataclass(frozen=True)
class DevicePlan:
    devices: tuple[str, ...]
    """The devices of the pool's slots, in slot order; empty: no GPU assignment (CPU)."""
    concurrency: int

    def for_child(self, index: int) -> str | None:
        """The ``CUDA_VISIBLE_DEVICES`` of pool child ``index``; None leaves the environment as it is."""
        if not self.devices:
            return None
        if not 0 <= index < self.concurrency:
            raise DeviceConfigError(f"pool child {index} is outside the worker's {self.concurrency} slots")
        return self.devices[index]

    def describe(self) -> str:
        if not self.devices:
            return "no GPU (CPU training)"
        return ", ".join(f"slot {i}: GPU {d}" for i, d in enumerate(self.devices))


def plan_devices(
    setting: str | None, concurrency: int, environ: Mapping[str, str] | None = None
) -> DevicePlan:
    """One device per slot from ``setting`` (see the module docstring); refuses what cannot work."""
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
            f"--concurrency {concurrency} needs {concurrency} GPUs (one training job per GPU) but this worker "
            f"has {len(pool)} ({','.join(pool)}). Lower --concurrency or list more devices with --gpus."
        )
    if concurrency < len(pool):
        log.warning(
            "worker has %d GPUs (%s) but --concurrency %d: GPUs %s stay idle (raise --concurrency to use them)",
            len(pool),
            ",".join(pool),
            concurrency,
            ",".join(pool[concurrency:]),
        )
    return DevicePlan(tuple(pool[:concurrency]), concurrency)


def assign_child(plan: DevicePlan, index: int, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set this pool child's ``CUDA_VISIBLE_DEVICES`` (before anything initializes CUDA)."""
    env = os.environ if environ is None else environ
    device = plan.for_child(index)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return device


_plan: DevicePlan | None = None


def _consumes_gpu_queue(worker: object) -> bool:
    app = getattr(worker, "app", None)
    queues = getattr(getattr(getattr(app, "amqp", None), "queues", None), "consume_from", None) or {}
    return "gpu" in queues


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
    if not (_consumes_gpu_queue(worker) and _is_prefork(worker)):
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
    log.info("pool child %d trains on GPU %s", index, device)
    return device
