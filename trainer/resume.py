"""Run state that survives pause, budget stops and killed workers.

Layout of ``<workdir>/state`` (this directory is the pause snapshot, ``JobResult.snapshot_dir``)::

    state.json        stages done, current stage, global step, kept checkpoints, CSV rows, counters
    artifacts/        stage outputs reused on resume (augmented rows, synthesized traces, the SFT adapter)
    trainer/          a full HF Trainer checkpoint of the stage in progress (adapter, optimizer, scheduler,
                      RNG, trainer_state.json); written at every evaluation and on pause

Everything is written to a temporary name and renamed, so a kill at any moment leaves the previous complete
version in place. Under a multi-process launch rank 0 writes it all, except the HF Trainer checkpoint, which
every rank saves together (:meth:`StateStore.save_trainer`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.checkpoints import atomic_dir, atomic_write_text
from trainer.distributed import current

STATE_VERSION = 1


@dataclass
class RunState:
    job_id: str
    method: str
    done: list[str] = field(default_factory=list)
    stage: str | None = None
    global_step: int = 0
    stage_offsets: dict[str, int] = field(default_factory=dict)
    total_steps: int = 0
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    csv_rows: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    trained_tokens: int = 0
    resumes: int = 0
    trainer_step: dict[str, int] = field(default_factory=dict)
    """Global step of the HF checkpoint in ``trainer/`` for each stage (where a resume continues)."""
    valid_scores: dict[str, list[float]] = field(default_factory=dict)
    """Mean grade per validation row of the model evaluated at each global step (str keys: JSON), for the
    paired comparisons that choose the final model (trainer.selection)."""
    version: int = STATE_VERSION


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.trainer_dir = root / "trainer"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def exists(self) -> bool:
        return self.state_file.is_file()

    def load(self) -> RunState:
        data = json.loads(self.state_file.read_text())
        data.pop("version", None)
        return RunState(**data)

    def save(self, state: RunState) -> None:
        atomic_write_text(self.state_file, json.dumps(asdict(state), indent=1, default=str))

    def artifact(self, name: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        return self.artifacts / name

    def save_trainer(self, trainer: Any) -> None:
        """A resumable HF Trainer checkpoint of the current step (what ``resume_from_checkpoint`` reads).

        Under a launch, a collective: call it on every rank. HF decides who writes the model and optimizer
        (rank 0 for DDP, every rank its shard for ZeRO-3 / FSDP); each rank writes its ``rng_state_<rank>.pth``."""

        def write(tmp: Path) -> None:
            trainer.save_model(str(tmp), _internal_call=True)
            trainer._save_optimizer_and_scheduler(str(tmp))
            trainer._save_rng_state(str(tmp))
            if current().is_main:
                trainer.state.save_to_json(str(tmp / "trainer_state.json"))

        atomic_dir(self.trainer_dir, write, every_rank=True)

    def trainer_checkpoint(self) -> Path | None:
        return self.trainer_dir if (self.trainer_dir / "trainer_state.json").is_file() else None

    def clear_trainer(self) -> None:
        if current().is_main:
            shutil.rmtree(self.trainer_dir, ignore_errors=True)

    def adopt(self, snapshot: Path) -> None:
        """Start from a snapshot written elsewhere (``JobSpec.resume_from``) unless it is this directory.

        Rank 0 copies; under a launch the other ranks wait (``distributed.barrier``) before loading it."""
        if snapshot.resolve() == self.root.resolve():
            return
        atomic_dir(self.root, lambda tmp: shutil.copytree(snapshot, tmp, dirs_exist_ok=True))
