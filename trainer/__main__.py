"""``python -m trainer run job.yaml``: run a job from a YAML/JSON JobSpec, printing events to the console.

Ctrl-C pauses (a snapshot is written; run again with ``resume_from`` set to it, or just rerun with the same
``--workdir`` to continue); a second Ctrl-C cancels.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
from pathlib import Path
from typing import Any, Literal

from trainer.interface import JobSpec, StopRequest, TrainerError


class ConsoleSink:
    def message(self, text: str, *, level: Literal["info", "warn", "error"] = "info") -> None:
        print(f"{_now()} [{level}] {text}", flush=True)

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        print(f"{_now()} [metrics] {text}", flush=True)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        print(f"{_now()} [checkpoint] step {step} -> {path}", flush=True)

    def checkpoint_removed(self, step: int) -> None:
        print(f"{_now()} [checkpoint] step {step} pruned", flush=True)

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        eta = datetime.datetime.fromtimestamp(finish_at).strftime("%H:%M:%S")
        print(f"{_now()} [estimate] step {step}/{total_steps}, finish around {eta}", flush=True)


def _now() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S")


class SignalControl:
    """First SIGINT pauses, the second cancels."""

    def __init__(self) -> None:
        self.request: StopRequest | None = None
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, *_: object) -> None:
        self.request = "cancel" if self.request == "pause" else "pause"
        print(f"\n{_now()} [control] {self.request} requested", file=sys.stderr, flush=True)

    def poll(self) -> StopRequest | None:
        return self.request


def load_spec(path: Path) -> JobSpec:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    # Relative file paths in the spec are relative to the spec file.
    for key in ("training_file", "validation_file", "resume_from", "cache_dir"):
        if data.get(key) and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    src = data.get("model_source", "")
    if src and not src.startswith("gguf:") and (path.parent / src).is_dir():
        data["model_source"] = str((path.parent / src).resolve())
    return JobSpec.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job spec (YAML or JSON)")
    run.add_argument("spec", type=Path)
    run.add_argument("--workdir", type=Path, default=None, help="default: ./runs/<job_id>")
    args = parser.parse_args(argv)

    from trainer import run_job  # sets OMP_WAIT_POLICY before torch loads

    try:
        spec = load_spec(args.spec)
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.spec}: {e}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path("runs") / spec.job_id
    try:
        result = run_job(spec, ConsoleSink(), SignalControl(), workdir)
    except TrainerError as e:
        print(f"error [{e.code}{', ' + e.param if e.param else ''}]: {e.message}", file=sys.stderr)
        return 1
    print(f"{_now()} [done] status={result.status} model={result.model_dir} results={result.result_file}")
    if result.snapshot_dir:
        print(f"{_now()} [done] snapshot: {result.snapshot_dir} (rerun with the same --workdir to resume)")
    return 0 if result.status == "succeeded" else 3


if __name__ == "__main__":
    sys.exit(main())
