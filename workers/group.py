"""One job across the machines of a worker group (``core.worker_group``): node 0's runner gathers the other
nodes before it launches its own ranks (:func:`gather`), and each other node runs its share of the ranks
(:func:`join_launch`, the ``openrft.join_launch`` task on its group queue).

The nodes meet in the job's working directory, which every node of a group mounts at the same path (the ranks
read what rank 0 writes there, as under ``python -m trainer run --nnodes``). In ``<workdir>/launch/``:

- ``group.json``: the leader's attempt (job, attempt, a fresh token) and its state: ``waiting`` for the
  followers, ``go`` (its ranks start now), or ``aborted`` (it gave up; followers that joined go home).
- ``node-<r>.joined``: follower r sees the working directory and is ready; ``node-<r>.refused``: it cannot take
  part, and why (the leader fails the job at once, saying so).

A follower joins only a ``waiting`` attempt whose token its request carries, so a stale request (an attempt the
leader gave up on) never starts ranks that would wait at a rendezvous nobody holds. The leader waits
``worker_join_timeout_seconds`` for every follower, then fails the job saying what to start where, rather than
letting its ranks wait at the rendezvous for the process group's hours-long timeout. Once started, the ranks are
one torchrun world: a follower's rank that dies fails rank 0's next collective, the leader's launch ends without
a result (``RanksFailed``) and the job is re-queued, as on one machine.

A follower never writes to the job's database row: rank 0, on the leader, is the job's one voice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.queue import JOIN_LAUNCH, send_to_queue
from core.settings import Settings, get_settings
from core.worker_group import WorkerGroup, check_group, worker_group
from serving.gpus import visible_devices
from trainer.distributed import Backend, Launch, run_distributed
from trainer.interface import Control, JobSpec, TrainerError
from trainer.launch import LAUNCH_DIR
from workers.devices import consumed_queues, trains

log = logging.getLogger("openrft.worker.group")

POLL_S = 0.2
"""How often the nodes look at each other's files while they gather."""
GO_MARGIN_S = 60.0
"""A joined follower waits this much longer than the leader for its word (a leader that died says none)."""
REFUSED = 2
"""A follower's exit status when it did not take part (said in its log, and to the leader where it can)."""


class GroupIncomplete(TrainerError):
    """A follower refused or did not join in time: the job fails, saying what to start or fix where."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="worker_group_error")


def group_file(workdir: Path) -> Path:
    return workdir / LAUNCH_DIR / "group.json"


def joined_file(workdir: Path, node_rank: int) -> Path:
    return workdir / LAUNCH_DIR / f"node-{node_rank}.joined"


def refused_file(workdir: Path, node_rank: int) -> Path:
    return workdir / LAUNCH_DIR / f"node-{node_rank}.refused"


@dataclass(frozen=True)
class JoinRequest:
    """What node 0 sends each follower: the attempt to join and the launch its ranks take part in."""

    job_id: str
    attempt: int
    token: str
    spec: str
    """The JobSpec as JSON (the leader's, after it restored the job's state)."""
    workdir: str
    """Absolute, the same path on every node."""
    processes: int
    """Ranks per node."""
    backend: Backend
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    timeout_s: float
    """How long the leader waits for the group."""

    def launch(self) -> Launch:
        return Launch(
            processes=self.processes,
            nnodes=self.nnodes,
            node_rank=self.node_rank,
            master_addr=self.master_addr,
            master_port=self.master_port,
            backend=self.backend,
        )


def send_join(queue: str, request: JoinRequest) -> None:
    """Send a follower its launch to join; it expires unrun once the leader stops waiting for it. Tests
    replace this to run the follower in a thread."""
    send_to_queue(queue, JOIN_LAUNCH, expires=request.timeout_s, request=asdict(request))


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # a reader on another node sees the old file or the new one, never half


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _set_state(workdir: Path, request: JoinRequest, state: str) -> None:
    data = {"job_id": request.job_id, "attempt": request.attempt, "token": request.token, "state": state}
    _write_json(group_file(workdir), data)


def check_worker(worker: object, settings: Settings) -> None:
    """Celery ``worker_init``: refuse a training worker whose group options make no group (GroupConfigError)."""
    if trains(worker):
        concurrency = int(getattr(worker, "concurrency", 1) or 1)
        check_group(worker_group(settings), concurrency=concurrency, queues=consumed_queues(worker))


# ---------------------------------------------------------------------------------------------------------------
# Node 0
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Answers:
    joined: set[int]
    refused: dict[int, str]


def _answers(workdir: Path, token: str, nnodes: int) -> _Answers:
    answers = _Answers(set(), {})
    for rank in range(1, nnodes):
        refusal = _read_json(refused_file(workdir, rank))
        if refusal is not None and refusal.get("token") == token:
            answers.refused[rank] = str(refusal.get("reason"))
        joined = _read_json(joined_file(workdir, rank))
        if joined is not None and joined.get("token") == token:
            answers.joined.add(rank)
    return answers


def _not_joined(group: WorkerGroup, missing: list[int], timeout_s: float) -> str:
    nodes = ", ".join(
        f"node {r}: `{group.command(r)}` (it consumes the queue {group.queue(r)})" for r in missing
    )
    return (
        f"Training could not start: node{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} of this "
        f"worker's group of {group.nnodes} did not join within {timeout_s:.0f} s. Start the worker of each "
        f"on its machine ({nodes}), and mount the jobs' working directories (OPENRFT_HOME/jobs) at the same "
        "path on every node of the group."
    )


def _refused(refused: dict[int, str]) -> str:
    said = "; ".join(f"node {rank}: {reason}" for rank, reason in sorted(refused.items()))
    return f"Training could not start: a node of this worker's group refused to join ({said})."


def _send(group: WorkerGroup, request: JoinRequest) -> None:
    try:
        send_join(group.queue(request.node_rank), request)
    except Exception as exc:  # the broker is away: say so, rather than wait for a node that was never asked
        log.error("job %s: could not send node %d its launch: %s", request.job_id, request.node_rank, exc)
        raise GroupIncomplete(
            f"Training could not start: node 0 could not send node {request.node_rank} of its group the "
            f"launch to join ({type(exc).__name__}); check that every node of the group uses the same broker."
        ) from exc


def gather(
    group: WorkerGroup,
    spec: JobSpec,
    workdir: Path,
    *,
    attempt: int,
    processes: int,
    backend: Backend,
    control: Control,
    timeout_s: float,
) -> Launch | None:
    """Send every follower this attempt's launch and wait until all have joined; returns node 0's Launch, or
    None when the job was cancelled meanwhile. Raises :class:`GroupIncomplete` when a follower refuses or
    does not join within ``timeout_s`` (then the ones that joined are told to go home)."""
    if not group.is_leader:
        raise RuntimeError(f"node {group.node_rank} of a group takes no job; node 0 does")
    workdir = workdir.resolve()
    (workdir / LAUNCH_DIR).mkdir(parents=True, exist_ok=True)
    base = JoinRequest(
        job_id=spec.job_id,
        attempt=attempt,
        token=uuid.uuid4().hex,
        spec=spec.model_dump_json(),
        workdir=str(workdir),
        processes=processes,
        backend=backend,
        nnodes=group.nnodes,
        node_rank=0,
        master_addr=group.master_addr,
        master_port=group.port,
        timeout_s=timeout_s,
    )
    _set_state(workdir, base, "waiting")
    deadline = time.monotonic() + timeout_s
    try:
        for rank in range(1, group.nnodes):
            _send(group, JoinRequest(**{**asdict(base), "node_rank": rank}))
        while True:
            answers = _answers(workdir, base.token, group.nnodes)
            missing = [r for r in range(1, group.nnodes) if r not in answers.joined]
            if answers.refused:
                raise GroupIncomplete(_refused(answers.refused))
            if not missing:
                break
            if control.poll() == "cancel":
                _set_state(workdir, base, "aborted")
                return None
            if time.monotonic() >= deadline:
                raise GroupIncomplete(_not_joined(group, missing, timeout_s))
            time.sleep(POLL_S)
    except BaseException:
        with contextlib.suppress(OSError):  # the error that got here is the one to report
            _set_state(workdir, base, "aborted")
        raise
    _set_state(workdir, base, "go")
    return base.launch()


# ---------------------------------------------------------------------------------------------------------------
# Nodes 1..N-1
# ---------------------------------------------------------------------------------------------------------------


def _mismatch(request: JoinRequest, own: WorkerGroup) -> str | None:
    theirs = (request.nnodes, request.node_rank, request.master_addr, request.master_port)
    if theirs == (own.nnodes, own.node_rank, own.master_addr, own.master_port):
        return None
    return (
        f"node 0 launches node {request.node_rank} of {request.nnodes} at {request.master_addr}:"
        f"{request.master_port}, but this worker was started as node {own.node_rank} of {own.nnodes} at "
        f"{own.master_addr}:{own.master_port}"
    )


def _devices(request: JoinRequest) -> tuple[list[str], str | None]:
    """The GPUs this node's ranks take (empty: the CPU), or why it cannot run its share."""
    if request.backend != "nccl":
        return [], None
    devices = visible_devices()
    if len(devices) < request.processes:
        return [], (
            f"node 0 runs {request.processes} processes per node on GPUs, this node has {len(devices)} "
            f"GPU{'s' * (len(devices) != 1)}"
        )
    return devices[: request.processes], None


def _own_spec(request: JoinRequest, settings: Settings, workdir: Path) -> Path:
    """This node's copy of the spec: its own model cache, and its home hidden from the job's code too."""
    spec = JobSpec.model_validate_json(request.spec)
    graders = dict(spec.grader_settings)
    graders["hidden_paths"] = [*graders.get("hidden_paths", []), str(settings.home)]
    spec = spec.model_copy(update={"cache_dir": settings.cache_dir / "models", "grader_settings": graders})
    path = workdir / LAUNCH_DIR / f"job-node{request.node_rank}.json"
    path.write_text(spec.model_dump_json())
    return path


def _refuse(request: JoinRequest, workdir: Path, reason: str) -> int:
    log.error(
        "job %s attempt %d: node %d does not join: %s",
        request.job_id,
        request.attempt,
        request.node_rank,
        reason,
    )
    _write_json(
        refused_file(workdir, request.node_rank),
        {"token": request.token, "attempt": request.attempt, "host": socket.gethostname(), "reason": reason},
    )
    return REFUSED


def _wait_for_word(workdir: Path, request: JoinRequest) -> bool:
    """Whether the leader launches (``go``); False when it gave up or said nothing in time."""
    deadline = time.monotonic() + request.timeout_s + GO_MARGIN_S
    while time.monotonic() < deadline:
        state = _read_json(group_file(workdir)) or {}
        if state.get("token") != request.token or state.get("state") == "aborted":
            return False
        if state.get("state") == "go":
            return True
        time.sleep(POLL_S)
    return False


def join_launch(data: Mapping[str, Any], *, settings: Settings | None = None) -> int:
    """Run this node's ranks of the launch node 0 sent; returns their exit status, or :data:`REFUSED` when
    this node did not take part (why: in the log, and in the launch directory for the leader when it is
    visible)."""
    settings = settings or get_settings()
    request = JoinRequest(**data)
    workdir = Path(request.workdir)
    job, attempt, rank = request.job_id, request.attempt, request.node_rank
    state = _read_json(group_file(workdir))
    if state is None:
        log.error(
            "job %s attempt %d: node %d cannot see the job's working directory %s: the nodes of a group must "
            "mount the jobs' working directories (OPENRFT_HOME/jobs) at the same path as node 0",
            job,
            attempt,
            rank,
            workdir,
        )
        return REFUSED
    if state.get("token") != request.token or state.get("state") != "waiting":
        log.warning("job %s attempt %d: node 0 no longer waits for this launch; not joining", job, attempt)
        return REFUSED
    reason = _mismatch(request, worker_group(settings))
    gpus, no_gpus = _devices(request)
    if reason or no_gpus:
        return _refuse(request, workdir, reason or no_gpus or "")
    spec_file = _own_spec(request, settings, workdir)
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # none on the CPU: the ranks must match node 0's gloo
    _write_json(
        joined_file(workdir, rank), {"token": request.token, "attempt": attempt, "host": socket.gethostname()}
    )
    if not _wait_for_word(workdir, request):
        log.warning("job %s attempt %d: node 0 did not launch; node %d goes home", job, attempt, rank)
        return REFUSED
    where = f"GPUs {','.join(gpus)}" if gpus else "the CPU"
    log.info("job %s attempt %d: node %d runs %d ranks on %s", job, attempt, rank, request.processes, where)
    code = run_distributed(["run", str(spec_file), "--workdir", str(workdir)], request.launch(), env=env)
    log.log(
        logging.INFO if code == 0 else logging.WARNING,
        "job %s attempt %d: node %d's ranks ended with status %d",
        job,
        attempt,
        rank,
        code,
    )
    return code
