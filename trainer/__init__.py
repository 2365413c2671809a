"""OpenRFT training library: ``run_job`` turns a JobSpec into a fine-tuned adapter.

Importing this package is cheap and torch-free (the API process imports it for configuration checks);
the pipeline and its heavy dependencies load on the first call to :func:`run_job`.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer.interface import CheckpointInfo, Control, EventSink, JobResult, JobSpec, TrainerError

__all__ = ["CheckpointInfo", "Control", "EventSink", "JobResult", "JobSpec", "TrainerError", "run_job"]


def run_job(spec: JobSpec, sink: EventSink, control: Control, workdir: Path) -> JobResult:
    """Run or resume one job in ``workdir`` (see trainer/pipeline.py for the layout)."""
    # OpenMP threads that spin while waiting make torch on a shared CPU many times slower (measured 6x on
    # SmolLM2 generation with one other busy process on 2 cores). The policy is read when torch loads, so
    # this only helps if nothing imported torch yet; workers should set it in their environment too.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from trainer.pipeline import run_job as _run

    return _run(spec, sink, control, workdir)
