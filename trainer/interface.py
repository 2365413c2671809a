"""The one narrow interface between the service (Celery worker) and the training library.

The worker builds a :class:`JobSpec` from a job row, hands it to :func:`trainer.run_job` together with an
:class:`EventSink` (persists events, checkpoints and the finish estimate) and a :class:`Control` (says
whether the user asked to cancel or pause), and a private working directory. The trainer knows nothing
of HTTP, Celery or the database. ``python -m trainer run job.yaml`` drives the same function from a file.

This module is torch-free so that the API process can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

StopRequest = Literal["cancel", "pause"]

# The parts of a job's working directory that a worker copies to and from other machines (the rest of the
# layout is the trainer's own; see trainer/pipeline.py).
STATE_DIR = "state"
"""``workdir / STATE_DIR``: the resumable run state, which is the pause snapshot; a run started on a workdir
that holds one continues from it."""
CHECKPOINTS_DIR = "checkpoints"
"""``workdir / CHECKPOINTS_DIR / f"step-{N}"``: the kept checkpoints the state refers to, by directory name."""


class JobSpec(BaseModel):
    """Everything the trainer needs to run one job; serializable to YAML/JSON."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="Job id, used in names and log lines only.")
    method: Literal["reinforcement", "supervised"]
    base_model: str = Field(description="Public name of the base model, e.g. 'smollm2-135m-instruct'.")
    model_source: str = Field(
        description="Where to load the base model from: a local directory, a Hugging Face id, or "
        "'gguf:<python package>/<file>' for a GGUF file shipped in an installed package."
    )
    training_file: Path
    validation_file: Path | None = None
    grader: dict[str, Any] | None = Field(default=None, description="The job's grader (reinforcement).")
    response_format: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="OpenAI hyperparameters.")
    openrft: dict[str, Any] = Field(default_factory=dict, description="OpenRFT extension options.")
    seed: int = 42
    resume_from: Path | None = Field(default=None, description="A snapshot directory written by pause.")
    grader_settings: dict[str, Any] = Field(
        default_factory=dict, description="Deployment settings for graders (model endpoints, sandbox)."
    )
    cache_dir: Path | None = Field(default=None, description="Where converted base models are cached.")


class EventSink(Protocol):
    """Where the trainer reports progress. Each call is persisted before it returns."""

    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        """A human-readable event (type 'message')."""

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        """An OpenAI-style metrics event (type 'metrics'); ``data`` has step, total_steps, ... ."""

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        """A checkpoint (PEFT adapter directory) was written at ``path`` for ``step``.

        Called before the state of ``step`` is saved, on the training thread: until it returns the trainer
        writes nothing, and ``workdir / STATE_DIR`` holds the complete state of the previous resume point,
        so the worker may copy it then (it uploads it for other machines)."""

    def checkpoint_removed(self, step: int) -> None:
        """The checkpoint of ``step`` was pruned (only the best few are kept)."""

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        """The trainer's current estimate of the finish time (unix seconds)."""


class Control(Protocol):
    """Polled by the trainer at every step and during generation; must be cheap (no I/O per call)."""

    def poll(self) -> StopRequest | None:
        """None to go on, 'cancel' to stop and keep nothing, 'pause' to snapshot and stop."""


class NullSink:
    """An EventSink that drops everything; subclass it to keep only the events you need."""

    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        pass

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        pass

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        pass

    def checkpoint_removed(self, step: int) -> None:
        pass

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        pass


class NeverStop:
    """A Control that never asks to stop."""

    def poll(self) -> StopRequest | None:
        return None


@dataclass
class CheckpointInfo:
    step: int
    path: Path
    metrics: dict[str, Any]


@dataclass
class JobResult:
    status: Literal["succeeded", "paused", "cancelled"]
    model_dir: Path | None = None
    """Directory of the final model (a PEFT adapter, or merged weights when asked)."""
    result_file: Path | None = None
    """Per-step metrics CSV, attached to the job as a 'fine-tune-results' file."""
    rollouts_file: Path | None = None
    """Sampled RL completions with their rewards (JSONL), attached as a second 'fine-tune-results' file."""
    trained_tokens: int = 0
    snapshot_dir: Path | None = None
    """Set when paused: resume by passing it back as ``JobSpec.resume_from``."""
    checkpoints: list[CheckpointInfo] = field(default_factory=list)


class TrainerError(Exception):
    """A failure the user can act on; becomes the job's ``error`` object."""

    def __init__(self, message: str, *, code: str = "training_error", param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
