"""What the ranks of tests/trainer/test_pipeline_distributed.py run (a script, not a test): one real job.

``python dist_pipeline.py <spec.json> <workdir> <out_dir> [stop_at_step [pause|cancel]]``: every rank calls
``run_job`` with a recording sink and writes ``<out_dir>/rank-<N>.json`` (its result and the events its sink
received); rank 0's Control asks to pause (or cancel) once the step ``stop_at_step`` was reported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from trainer import distributed, run_job
from trainer.interface import JobSpec, NullSink, StopRequest


class Recorder(NullSink):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def message(self, text: str, *, level: str = "info") -> None:  # type: ignore[override]
        self.events.append({"kind": "message", "level": level, "text": text})

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self.events.append({"kind": "metrics", "data": data})

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        self.events.append({"kind": "checkpoint", "step": step})


class StopAfter:
    def __init__(self, sink: Recorder, step: int | None, kind: StopRequest) -> None:
        self.sink, self.step, self.kind = sink, step, kind

    def poll(self) -> StopRequest | None:
        if self.step is None:
            return None
        steps = [
            e["data"]["step"] for e in self.sink.events if e["kind"] == "metrics" and _is_step(e["data"])
        ]
        return self.kind if any(s >= self.step for s in steps) else None


def _is_step(data: dict[str, Any]) -> bool:
    return data.get("stage") in ("sft", "rl") and "step" in data


def main() -> None:
    spec = JobSpec.model_validate_json(Path(sys.argv[1]).read_text())
    workdir, out = Path(sys.argv[2]), Path(sys.argv[3])
    stop_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
    kind: StopRequest = "cancel" if sys.argv[5:] == ["cancel"] else "pause"
    world = distributed.current()
    sink = Recorder()
    result = run_job(spec, sink, StopAfter(sink, stop_at, kind), workdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{world.rank}.json").write_text(
        json.dumps({"status": result.status, "world_size": world.world_size, "events": sink.events})
    )


if __name__ == "__main__":
    main()
