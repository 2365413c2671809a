"""A job's ``integrations``: its metrics logged to Weights & Biases, as OpenAI's fine-tuning does.

The API accepts only integrations this module carries out (``app.services.jobs`` checks them), so none is
ever ignored. wandb is imported here, in the worker, and only for a job that asks for it: the API and the
jobs without it never load it. A run that cannot start (wandb missing, a bad key online) is a warning on the
job, not a failed job: the training is what the user came for.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

from trainer.interface import EventSink

log = logging.getLogger("openrft.worker")


def _numbers(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a metrics event, flattened to wandb's ``a/b`` keys."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_numbers(value, name + "/"))
        elif isinstance(value, int | float) and math.isfinite(value):  # bools too: 0 / 1
            out[name] = float(value)
    return out


class WandbSink:
    """An EventSink that passes every event on to ``inner`` and logs each metrics event to a wandb run."""

    def __init__(self, inner: EventSink, run: Any) -> None:
        self.inner = inner
        self.run = run

    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        self.inner.message(text, level=level)

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self.inner.metrics(text, data)
        values = {k: v for k, v in _numbers(data).items() if k != "step"}
        step = data.get("step")
        try:
            if values:
                self.run.log(values, step=step if isinstance(step, int) else None)
        except Exception as exc:  # logging must never stop training
            log.warning("wandb log failed: %s", exc)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        self.inner.checkpoint_saved(step, path, metrics)

    def checkpoint_removed(self, step: int) -> None:
        self.inner.checkpoint_removed(step)

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        self.inner.estimate(finish_at, step=step, total_steps=total_steps)

    def finish(self, status: str) -> None:
        try:
            self.run.summary["status"] = status
            self.run.finish(exit_code=0 if status == "succeeded" else 1)
        except Exception as exc:
            log.warning("wandb finish failed: %s", exc)


def with_integrations(
    sink: EventSink,
    integrations: list[dict[str, Any]] | None,
    *,
    job_id: str,
    config: dict[str, Any],
    mode: Literal["offline", "online"],
    root: Path,
) -> EventSink:
    """``sink``, wrapped to log to the job's wandb run when it has a wandb integration."""
    spec = next((i.get("wandb") or {} for i in integrations or [] if i.get("type") == "wandb"), None)
    if spec is None:
        return sink
    try:
        import wandb

        root.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=spec["project"],
            entity=spec.get("entity"),
            name=spec.get("name") or job_id,
            tags=spec.get("tags"),
            id=job_id.replace("ftjob-", "")[:64] or None,  # a resumed attempt continues the same run
            resume="allow",
            mode=mode,
            dir=str(root),
            config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )
    except Exception as exc:
        sink.message(
            f"The wandb integration could not start a Weights & Biases run ({type(exc).__name__}: {exc}); the "
            "job trains without it.",
            level="warn",
        )
        return sink
    where = (
        f"offline, in {run.dir.rsplit('/files', 1)[0]}: upload it with `wandb sync` on that directory"
        if mode == "offline"
        else f"at {run.url}"
    )
    sink.message(f"Logging metrics to Weights & Biases: project {spec['project']}, run {run.id} ({where}).")
    return WandbSink(sink, run)


def finish_integrations(sink: EventSink, status: str) -> None:
    if isinstance(sink, WandbSink):
        sink.finish(status)
