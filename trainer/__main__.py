"""``python -m trainer run job.yaml``: run a job from a YAML/JSON JobSpec, printing events to the console.

Ctrl-C pauses (a snapshot is written; run again with ``resume_from`` set to it, or just rerun with the same
``--workdir`` to continue); a second Ctrl-C cancels.

With ``openrft.distributed.processes`` > 1 the command starts itself again under ``torch.distributed.run`` with
that many processes (trainer/distributed.py); Ctrl-C then reaches rank 0 through ``<workdir>/control`` and rank 0
leaves the outcome in ``<workdir>/launch_result.json`` for this process to report (trainer/launch.py).

``--events FILE``: rank 0 appends its events to FILE as JSON lines instead of printing them, and waits after
each checkpoint until a reader acknowledges it (trainer/event_file.py): how ``trainer.launch.launch_job`` brings a
launch's events to a worker's sink.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Literal

from trainer.distributed import Backend, Launch
from trainer.event_file import EventFileSink
from trainer.interface import Control, EventSink, JobResult, JobSpec, NeverStop, StopRequest, TrainerError
from trainer.launch import LAUNCH_RESULT, free_port, job_processes, read_result, record_failure, write_result


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
    run.add_argument(
        "--events",
        type=Path,
        default=None,
        help="append rank 0's events to this file as JSON lines instead of printing them; each checkpoint "
        "waits until a reader acknowledges it (trainer/event_file.py)",
    )
    nodes = run.add_argument_group(
        "several machines (static rendezvous; run the same command on every node, with its --node-rank, "
        "and a --workdir every node mounts at the same path)"
    )
    nodes.add_argument("--nnodes", type=int, default=1, help="machines in the job (default 1)")
    nodes.add_argument("--node-rank", type=int, default=0, help="this machine's place, 0..nnodes-1")
    nodes.add_argument(
        "--master-addr", default="127.0.0.1", help="node 0's address, reachable from every node"
    )
    nodes.add_argument(
        "--master-port",
        type=int,
        default=None,
        help="a free port on node 0 (default: any free one on one node)",
    )
    args = parser.parse_args(argv)

    from trainer import run_job  # sets OMP_WAIT_POLICY before torch loads

    try:
        spec = load_spec(args.spec)
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.spec}: {e}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path("runs") / spec.job_id
    from trainer import distributed

    processes = job_processes(spec)
    if (processes > 1 or args.nnodes > 1) and not distributed.inside_launch():
        if args.nnodes > 1 and args.master_port is None:
            parser.error("--master-port is required with --nnodes > 1 (the same on every node)")
        try:
            launch = distributed.Launch(
                processes=processes,
                nnodes=args.nnodes,
                node_rank=args.node_rank,
                master_addr=args.master_addr,
                master_port=args.master_port or free_port(),
            )
        except ValueError as e:
            parser.error(str(e))
        return _relaunch(args.spec, spec, workdir, launch, events=args.events)
    world = distributed.current()
    sink: EventSink = ConsoleSink()
    if args.events is not None:
        sink = EventFileSink(args.events)  # opened on its first event: rank 0's (main_sink below)
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
    except Exception as e:
        if world.distributed:
            # Otherwise the launching process learns only an exit status.
            record_failure(workdir, world.rank, e)
            if world.is_main and isinstance(e, TrainerError):
                write_result(workdir / LAUNCH_RESULT, error=e)
        if not isinstance(e, TrainerError):
            raise
        print(f"error [{e.code}{', ' + e.param if e.param else ''}]: {e.message}", file=sys.stderr)
        return 1
    if world.distributed:
        if world.is_main:
            write_result(workdir / LAUNCH_RESULT, result)
        return 0  # the parent reports; a non-zero rank would read as a crash to torchrun
    _print_result(result)
    return 0 if result.status == "succeeded" else 3


def _relaunch(spec_path: Path, spec: JobSpec, workdir: Path, launch: Launch, *, events: Path | None) -> int:
    """Run this command again on the ranks of ``launch`` (this node's); report what rank 0 left in the launch
    result (on node 0, or on any node when the workdir is shared)."""
    from trainer.config import ConfigError, Hardware, check_hardware, parse_config
    from trainer.distributed import run_distributed

    hardware = Hardware.detect()
    try:
        check_hardware(parse_config(spec.method, spec.hyperparameters, spec.openrft), hardware)
    except ConfigError as e:
        print(f"error [invalid_hyperparameters, {e.param}]: {e.message}", file=sys.stderr)
        return 1
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if launch.node_rank == 0:
        (workdir / LAUNCH_RESULT).unlink(missing_ok=True)
    backend: Backend = "nccl" if hardware.gpu else "gloo"
    world = launch.nproc * launch.nnodes
    print(f"{_now()} [launch] {launch.nproc} processes here, {world} in all ({backend})", flush=True)
    extra = ["--events", str(events.resolve())] if events is not None else []
    rc = run_distributed(
        ["run", str(spec_path.resolve()), "--workdir", str(workdir), *extra],
        dataclasses.replace(launch, backend=backend),
        control_file=workdir / "control",
    )
    if launch.node_rank != 0:
        return rc  # node 0 reports the job's outcome
    try:
        result = read_result(workdir / LAUNCH_RESULT)
    except TrainerError:
        return 1  # rank 0 printed it
    except (OSError, ValueError, KeyError):
        return rc or 1
    _print_result(result)
    return 0 if result.status == "succeeded" else 3


def _print_result(result: JobResult) -> None:
    print(f"{_now()} [done] status={result.status} model={result.model_dir} results={result.result_file}")
    if result.snapshot_dir:
        print(f"{_now()} [done] snapshot: {result.snapshot_dir} (rerun with the same --workdir to resume)")


if __name__ == "__main__":
    sys.exit(main())
