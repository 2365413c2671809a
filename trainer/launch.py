"""One job on several processes, driven by a service that holds the real sink and control: :func:`launch_job`.

The ranks run ``python -m trainer run <workdir>/launch/job.json --workdir <workdir> --events <file>`` under
torchrun (trainer/distributed.py). Rank 0 is the job's one voice: its events go into the event file and the
calling process relays them to its sink as they come (trainer/event_file.py: a checkpoint waits until the
sink has recorded it, as in one process); the caller's control is copied into the control file that rank 0
reads (:class:`trainer.distributed.FileControl`), and rank 0 decides every stop for all ranks. The outcome
comes back in ``<workdir>/launch_result.json``: the whole :class:`JobResult`, or the TrainerError that ended
the job, raised again here. A launch that ends without that file (a rank crashed, was killed, or died of OOM)
raises :class:`RanksFailed`: the service re-queues such a job, and the next attempt resumes from the saved
state in the same working directory, as after a killed worker.

On one machine's GPUs the launch may give its last GPU to a vLLM rollout server first, when colocated rollouts do
not fit (:func:`plan_rollouts`, trainer/rollout_server.py): it is up before the ranks start and stopped after.

Torch-free: the worker imports this; torch loads only in the ranks (and transformers, to size a server's need).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from trainer.distributed import Launch, run_distributed
from trainer.event_file import CONSUMER_ENV, EventRelay, ack_path
from trainer.interface import CheckpointInfo, Control, EventSink, JobResult, JobSpec, TrainerError
from trainer.rollout_server import ServerChoice, choose_server, rollout_server, with_server

LAUNCH_RESULT = "launch_result.json"
"""``workdir / LAUNCH_RESULT``: rank 0's outcome of a launch (see :func:`write_result`)."""
LAUNCH_DIR = "launch"
"""``workdir / LAUNCH_DIR``: the launch's spec, event file, control file and the ranks' failure notes."""
FORWARD_EVERY_S = 0.5
"""How often the caller's control is copied to the control file (what FileControl reads at most as often)."""


class RanksFailed(RuntimeError):
    """The launch ended without rank 0's result: a rank crashed or was killed (SIGKILL, the OOM killer), and
    torchrun stopped the others. Not the user's error: the service retries the job from its last state."""

    def __init__(self, exit_code: int, failures: Mapping[int, str]) -> None:
        self.exit_code = exit_code
        self.failures = dict(failures)
        """rank -> what its Python code raised (absent for a rank killed by a signal, and for ranks that torchrun
        stopped)."""
        said = "; ".join(f"rank {r}: {text}" for r, text in sorted(self.failures.items()))
        super().__init__(
            f"the job's processes ended without a result (torchrun exit status {exit_code}; "
            f"{said or 'a process was killed'})"
        )


def job_processes(spec: JobSpec) -> int:
    """The job's ``openrft.distributed.processes``; 1 when the options do not parse (the pipeline says why)."""
    from trainer.config import ConfigError, parse_config

    try:
        return parse_config(spec.method, spec.hyperparameters, spec.openrft).openrft.distributed.processes
    except ConfigError:
        return 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now on ``host``: each launch's rendezvous gets its own, so jobs on one machine never meet."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def local_launch(processes: int, *, gpu: bool) -> Launch:
    """A one-machine launch on a free port: NCCL over the GPUs this process sees (``CUDA_VISIBLE_DEVICES``, each
    rank takes the one of its LOCAL_RANK), or gloo on the CPU."""
    return Launch(processes=processes, master_port=free_port(), backend="nccl" if gpu else "gloo")


# ---------------------------------------------------------------------------------------------------------------
# The launch result
# ---------------------------------------------------------------------------------------------------------------


def write_result(path: Path, result: JobResult | None = None, *, error: TrainerError | None = None) -> None:
    """Rank 0's outcome, replaced atomically: the JobResult, or the TrainerError that ended the job."""
    data: dict[str, Any] = {"error": None}
    if result is not None:
        data.update(asdict(result))
    if error is not None:
        data["error"] = {"code": error.code, "message": error.message, "param": error.param}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_result(path: Path) -> JobResult:
    """The JobResult rank 0 left in ``path``; raises the TrainerError it recorded, OSError/ValueError if none."""
    data = json.loads(path.read_text())
    if data.get("error"):
        err = data["error"]
        raise TrainerError(err["message"], code=err.get("code") or "training_error", param=err.get("param"))

    def opt(key: str) -> Path | None:
        return Path(data[key]) if data.get(key) else None

    return JobResult(
        status=data["status"],
        model_dir=opt("model_dir"),
        result_file=opt("result_file"),
        rollouts_file=opt("rollouts_file"),
        trained_tokens=int(data.get("trained_tokens") or 0),
        snapshot_dir=opt("snapshot_dir"),
        checkpoints=[
            CheckpointInfo(step=int(c["step"]), path=Path(c["path"]), metrics=c.get("metrics") or {})
            for c in data.get("checkpoints") or []
        ],
    )


def failure_path(workdir: Path, rank: int) -> Path:
    return workdir / LAUNCH_DIR / f"failed-rank-{rank}.json"


def record_failure(workdir: Path, rank: int, exc: BaseException) -> None:
    """A rank's note of what ended it, for the launching process (whose only other news is an exit status)."""
    note: dict[str, Any] = {"message": f"{type(exc).__name__}: {exc}"[:1000]}
    if isinstance(exc, TrainerError):
        note.update(message=exc.message, code=exc.code, param=exc.param)
    path = failure_path(workdir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(note))


def _failures(workdir: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for path in (workdir / LAUNCH_DIR).glob("failed-rank-*.json"):
        try:
            out[int(path.stem.rsplit("-", 1)[1])] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


# ---------------------------------------------------------------------------------------------------------------
# The launch
# ---------------------------------------------------------------------------------------------------------------


def launch_gpus(launch: Launch, env: Mapping[str, str]) -> list[str]:
    """The GPUs a one-machine NCCL launch's ranks take: its own list, else the environment's, one per rank."""
    if launch.chosen_backend != "nccl" or launch.nnodes != 1:
        return []
    if launch.gpus is not None:
        devices = [str(g) for g in launch.gpus]
    else:
        devices = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return devices[: launch.nproc]


def plan_rollouts(
    spec: JobSpec, launch: Launch, env: dict[str, str]
) -> tuple[JobSpec, Launch, ServerChoice | None]:
    """Give the launch's last GPU to a vLLM rollout server when the colocated layout does not fit
    (trainer.rollout_server.choose_server): the spec then points the ranks at it, the launch has one rank less
    and ``env`` hides the server's GPU from the ranks. Otherwise everything as it was."""
    gpus = launch_gpus(launch, env)
    choice = choose_server(spec, gpus, port=free_port()) if len(gpus) >= 2 else None
    if choice is None:
        return spec, launch, None
    training = choice.training_gpus
    if launch.gpus is not None:
        launch = replace(launch, gpus=tuple(int(g) for g in training), processes=len(training))
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(training)
        launch = replace(launch, processes=len(training))
    return with_server(spec, choice.server, group_port=free_port()), launch, choice


def _forward(control: Control, path: Path, stop: threading.Event, every_s: float) -> None:
    """Copy the caller's stop request into the control file (rewritten whenever it differs, so a request made
    before the launch truncated the file still gets there)."""
    while not stop.wait(every_s):
        request = control.poll()
        if request is None:
            continue
        try:
            if path.read_text().strip() != request:
                path.write_text(request)
        except OSError:
            path.write_text(request)


def launch_job(
    spec: JobSpec,
    sink: EventSink,
    control: Control,
    workdir: Path,
    launch: Launch,
    *,
    env: Mapping[str, str] | None = None,
    forward_every_s: float = FORWARD_EVERY_S,
) -> JobResult:
    """Run (or resume) ``spec`` in ``workdir`` on the ranks of ``launch``, with rank 0's events reaching ``sink``
    and ``control`` reaching every rank; returns rank 0's JobResult (as :func:`trainer.run_job` would).

    Raises the TrainerError that ended the job, what ``sink`` raised (it ends the launch as it would end an
    in-process run), or :class:`RanksFailed` when the ranks ended without a result. ``env``: the ranks'
    environment (default: this process's)."""
    workdir = Path(workdir).resolve()
    where = workdir / LAUNCH_DIR
    where.mkdir(parents=True, exist_ok=True)
    events = where / "events.jsonl"
    for stale in (workdir / LAUNCH_RESULT, events, ack_path(events), *where.glob("failed-rank-*.json")):
        stale.unlink(missing_ok=True)  # an earlier attempt's
    child_env = {**(os.environ if env is None else env), CONSUMER_ENV: str(os.getpid())}
    spec, launch, rollouts = plan_rollouts(spec, launch, child_env)
    if rollouts is not None:
        sink.message(rollouts.describe())
    spec_file = where / "job.json"
    spec_file.write_text(spec.model_dump_json())
    control_file = where / "control"

    stop_forwarding = threading.Event()
    forwarder = threading.Thread(
        target=_forward,
        args=(control, control_file, stop_forwarding, forward_every_s),
        name=f"control-file-{spec.job_id}",
        daemon=True,
    )
    relay = EventRelay(events, sink).start()
    forwarder.start()
    try:
        with contextlib.ExitStack() as server:
            if rollouts is not None:  # up before the ranks: their first rollout needs it
                server.enter_context(rollout_server(rollouts.server, log=where / "rollout-server.log"))
            code = run_distributed(
                ["run", str(spec_file), "--workdir", str(workdir), "--events", str(events)],
                launch,
                control_file=control_file,
                env=child_env,
            )
    finally:
        stop_forwarding.set()
        forwarder.join()
        relay.stop()
    relay.raise_error()
    try:
        return read_result(workdir / LAUNCH_RESULT)
    except (OSError, ValueError, KeyError):
        pass
    failures = _failures(workdir)
    for rank in sorted(failures):  # a TrainerError on a rank is the job's error, whoever raised it
        note = failures[rank]
        if note.get("code"):
            raise TrainerError(note["message"], code=note["code"], param=note.get("param"))
    raise RanksFailed(code, {rank: note["message"] for rank, note in failures.items()})
