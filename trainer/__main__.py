"""``python -m trainer run job.yaml``: run a job from a YAML/JSON JobSpec, printing events to the console.

Ctrl-C pauses (a snapshot is written; run again with ``resume_from`` set to it, or just rerun with the same
``--workdir`` to continue); a second Ctrl-C cancels.

With ``openrft.distributed.processes`` > 1 the command starts itself again under ``torch.distributed.run`` with
that many processes (trainer/distributed.py); Ctrl-C then reaches rank 0 through ``<workdir>/control`` and rank 0
leaves the outcome in ``<workdir>/launch_result.json`` for this process to report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Literal

from trainer.interface import Control, EventSink, JobResult, JobSpec, NeverStop, StopRequest, TrainerError

LAUNCH_RESULT = "launch_result.json"


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
    from trainer import distributed

    processes = _processes(spec)
    if processes > 1 and not distributed.inside_launch():
        return _relaunch(args.spec, spec, workdir, processes)
    world = distributed.current()
    sink: EventSink = ConsoleSink()
    control: Control
    if world.distributed:
        distributed.bind_to_parent()
        distributed.ensure_group(world)
        sink = distributed.main_sink(sink, world)
        control_file = os.environ.get(distributed.CONTROL_FILE_ENV)
        # Rank 0 decides for every rank (distributed.CollectiveStopper); the parent asks it through the file.
        control = (
            distributed.FileControl(Path(control_file)) if world.is_main and control_file else NeverStop()
        )
    else:
        control = SignalControl()
    try:
        result = run_job(spec, sink, control, workdir)
    except TrainerError as e:
        print(f"error [{e.code}{', ' + e.param if e.param else ''}]: {e.message}", file=sys.stderr)
        return 1
    if world.distributed:
        if world.is_main:
            _write_result(workdir / LAUNCH_RESULT, result)
        return 0  # the parent reports; a non-zero rank would read as a crash to torchrun
    _print_result(result.status, result.model_dir, result.result_file, result.snapshot_dir)
    return 0 if result.status == "succeeded" else 3


def _processes(spec: JobSpec) -> int:
    """The job's ``openrft.distributed.processes``; 1 when the options do not parse (the pipeline reports why)."""
    from trainer.config import ConfigError, parse_config

    try:
        return parse_config(spec.method, spec.hyperparameters, spec.openrft).openrft.distributed.processes
    except ConfigError:
        return 1


def _relaunch(spec_path: Path, spec: JobSpec, workdir: Path, processes: int) -> int:
    """Run this command again on ``processes`` ranks; report what rank 0 left in the launch result."""
    from trainer.config import ConfigError, Hardware, check_hardware, parse_config
    from trainer.distributed import Launch, run_distributed

    hardware = Hardware.detect()
    try:
        check_hardware(parse_config(spec.method, spec.hyperparameters, spec.openrft), hardware)
    except ConfigError as e:
        print(f"error [invalid_hyperparameters, {e.param}]: {e.message}", file=sys.stderr)
        return 1
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / LAUNCH_RESULT).unlink(missing_ok=True)
    print(f"{_now()} [launch] {processes} processes ({'nccl' if hardware.gpu else 'gloo'})", flush=True)
    rc = run_distributed(
        ["run", str(spec_path.resolve()), "--workdir", str(workdir)],
        Launch(processes=processes, backend="nccl" if hardware.gpu else "gloo"),
        control_file=workdir / "control",
    )
    try:
        done = json.loads((workdir / LAUNCH_RESULT).read_text())
    except (OSError, ValueError):
        return rc or 1
    _print_result(done["status"], done["model_dir"], done["result_file"], done["snapshot_dir"])
    return 0 if done["status"] == "succeeded" else 3


def _write_result(path: Path, result: JobResult) -> None:
    fields = ("model_dir", "result_file", "snapshot_dir")
    data = {"status": result.status, **{k: str(v) if (v := getattr(result, k)) else None for k in fields}}
    path.write_text(json.dumps(data))


def _print_result(status: str, model_dir: object, result_file: object, snapshot_dir: object) -> None:
    print(f"{_now()} [done] status={status} model={model_dir} results={result_file}")
    if snapshot_dir:
        print(f"{_now()} [done] snapshot: {snapshot_dir} (rerun with the same --workdir to resume)")


if __name__ == "__main__":
    sys.exit(main())
