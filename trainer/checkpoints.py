"""Checkpoints: an adapter directory per evaluated step, the best few kept, written atomically.

Under a multi-process launch (``trainer.distributed``) the files here are written by rank 0 only; the other ranks
keep the same bookkeeping. A rank that reads what rank 0 wrote waits for it first (``distributed.barrier``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.distributed import World, barrier, broadcast, current, main_sink
from trainer.interface import CheckpointInfo, EventSink


def atomic_dir(
    target: Path, write: Callable[[Path], object], *, every_rank: bool = False, world: World | None = None
) -> Path:
    """Run ``write(tmp)`` in a temporary sibling directory, then rename it to ``target`` (replacing it).

    Under a launch, rank 0 alone writes and the others return at once. With ``every_rank`` (a collective) every
    rank calls ``write`` on the same temporary directory (HF Trainer's saving, which must run on all ranks and
    decides itself who writes what: each rank its RNG state, ZeRO-3 / FSDP their shards) and every rank returns
    once ``target`` is in place."""
    world = world or current()
    if not world.distributed or not every_rank:
        if world.is_main:
            _write_and_rename(target, write, _new_tmp(target))
        return target
    shared = Path(broadcast(str(_new_tmp(target)) if world.is_main else "", world))
    write(shared)
    barrier(world)
    if world.is_main:
        _write_and_rename(target, lambda _: None, shared)
    barrier(world)
    return target


def _new_tmp(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))


def _write_and_rename(target: Path, write: Callable[[Path], object], tmp: Path) -> None:
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename (on rank 0 only under a launch)."""
    if not current().is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rank_key(metrics: dict[str, Any], step: int) -> tuple[float, int]:
    """Higher is better: validation reward, else minus validation loss, else the newest step."""
    if metrics.get("full_valid_mean_reward") is not None:
        return (float(metrics["full_valid_mean_reward"]), step)
    if metrics.get("valid_loss") is not None:
        return (-float(metrics["valid_loss"]), step)
    return (0.0, step)


class CheckpointManager:
    def __init__(self, root: Path, sink: EventSink, *, keep: int = 3) -> None:
        self.root = root
        self.sink = main_sink(sink)
        self.keep = keep
        self.kept: list[CheckpointInfo] = []
        self.pinned: set[int] = set()
        """Steps never pruned, beside the best ``keep``: the end of SFT, which the final paired comparison may
        choose over RL's checkpoints (trainer.selection)."""

    def save(
        self,
        step: int,
        save_adapter: Callable[[Path], None],
        metrics: dict[str, Any],
        *,
        every_rank: bool = False,
    ) -> CheckpointInfo:
        """``every_rank``: under a launch, call ``save_adapter`` on every rank (HF ``save_model`` with ZeRO-3 or
        FSDP, which gathers the shards); by default rank 0 alone saves (DDP: every rank holds the weights)."""

        def write(tmp: Path) -> None:
            save_adapter(tmp)
            if current().is_main:
                (tmp / "openrft_metrics.json").write_text(json.dumps({"step": step, **metrics}, indent=1))

        path = atomic_dir(step_dir(self.root, step), write, every_rank=every_rank)
        info = CheckpointInfo(step=step, path=path, metrics=dict(metrics))
        self.kept = [c for c in self.kept if c.step != step] + [info]
        self.sink.checkpoint_saved(step, path, dict(metrics))
        self._prune()
        return info

    def pin(self, step: int) -> None:
        self.pinned.add(step)

    def _prune(self) -> None:
        ranked = sorted(
            (c for c in self.kept if c.step not in self.pinned),
            key=lambda c: rank_key(c.metrics, c.step),
            reverse=True,
        )
        for c in ranked[self.keep :]:
            if current().is_main:
                shutil.rmtree(c.path, ignore_errors=True)
            self.sink.checkpoint_removed(c.step)
        keep = ranked[: self.keep] + [c for c in self.kept if c.step in self.pinned]
        self.kept = sorted(keep, key=lambda c: c.step)

    def at(self, step: int) -> CheckpointInfo | None:
        return next((c for c in self.kept if c.step == step), None)

    def best(self) -> CheckpointInfo | None:
        if not self.kept:
            return None
        return max(self.kept, key=lambda c: rank_key(c.metrics, c.step))

    def to_state(self) -> list[dict[str, Any]]:
        return [
            {"step": c.step, "path": str(c.path), "metrics": c.metrics, "pinned": c.step in self.pinned}
            for c in self.kept
        ]

    def load_state(self, items: list[dict[str, Any]]) -> None:
        """Take the kept checkpoints of a saved state; they are looked up under this root by name, so a state
        written in another working directory (another machine's) finds the copies placed here."""
        self.kept = []
        self.pinned = {int(c["step"]) for c in items if c.get("pinned")}
        for c in items:
            step = int(c["step"])
            path = step_dir(self.root, step)
            if path.is_dir():
                self.kept.append(CheckpointInfo(step=step, path=path, metrics=dict(c["metrics"])))


def step_dir(root: Path, step: int) -> Path:
    """The directory of the checkpoint of ``step`` under a checkpoints root."""
    return root / f"step-{step}"
