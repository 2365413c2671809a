"""A group of training workers runs one job across its machines (core.worker_group, workers.group): node 0's
runner sends each other node the launch to join, waits until they have, and launches its ranks with theirs at
one static rendezvous. Two "nodes" here are two worker instances on 127.0.0.1 sharing OPENRFT_HOME: the leader's
runner in this process, the follower's join task in a thread (its Celery send replaced), each with one gloo
process of the real trainer on the tiny model."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.worker_group import GroupConfigError, WorkerGroup, check_group, group_queue, worker_queues
from tests.support import wait_until
from tests.workers.conftest import events, job_row, queued_rl_job
from tests.workers.test_runner_distributed import ranks_of_this_process, training_steps
from trainer.interface import JobSpec
from trainer.launch import free_port
from workers import group as worker_group_mod
from workers.group import REFUSED, GroupIncomplete, JoinRequest, gather, group_file, join_launch

OPENRFT = {"rl": {"max_steps": 2, "early_stop": False}, "sft": {"n_epochs": 1}, "eval": {"holdout": 0}}


# ---------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------


def test_each_node_of_a_group_has_its_own_queue() -> None:
    assert group_queue("10.0.0.1", 29500, 1) == "openrft.group.10.0.0.1-29500.node1"
    assert group_queue("fe80::1", 29500, 2) == "openrft.group.fe80__1-29500.node2"
    group = WorkerGroup(nnodes=3, node_rank=2, master_addr="10.0.0.1", master_port=29500)
    assert group.queue() == group_queue("10.0.0.1", 29500, 2) == worker_queues(group, None)[0]
    assert worker_queues(WorkerGroup(), None) == ["default", "gpu"]
    assert worker_queues(dataclasses.replace(group, node_rank=0), "gpu") == ["gpu"]


@pytest.mark.parametrize(
    ("group", "concurrency", "queues", "error"),
    [
        (WorkerGroup(nnodes=2, node_rank=2, master_port=29500), 1, ["gpu"], "--node-rank 2 is outside"),
        (WorkerGroup(node_rank=1), 1, ["gpu"], "with --nnodes 1 the nodes are 0..0"),
        (WorkerGroup(nnodes=0), 1, ["gpu"], "at least 1 node"),
        (WorkerGroup(nnodes=2), 1, ["gpu"], "--master-port .* is required with --nnodes 2"),
        (WorkerGroup(nnodes=2, master_port=70000), 1, ["gpu"], "not a port"),
        (WorkerGroup(nnodes=2, master_port=29500), 2, ["gpu"], "one job at a time .* --concurrency 1, not 2"),
        (WorkerGroup(nnodes=2, master_port=29500), 1, ["default"], "add gpu to --queues"),
        (WorkerGroup(nnodes=2, node_rank=1, master_port=29500), 1, ["gpu"], "only its group's queue"),
    ],
)
def test_group_options_that_make_no_group_are_refused(
    group: WorkerGroup, concurrency: int, queues: list[str], error: str
) -> None:
    with pytest.raises(GroupConfigError, match=error):
        check_group(group, concurrency=concurrency, queues=queues)


def test_the_worker_command_of_each_node() -> None:
    from app.cli import worker_command
    from openrft.cli import build_parser

    args = build_parser().parse_args(
        ["worker", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29500"]
    )
    assert (args.nnodes, args.node_rank, args.master_addr, args.master_port) == (2, 1, "10.0.0.1", 29500)
    assert build_parser().parse_args(["worker"]).nnodes is None  # the environment's setting applies

    leader = WorkerGroup(nnodes=2, master_addr="10.0.0.1", master_port=29500)
    cmd = worker_command(None, 1, False, None, leader)
    assert cmd[cmd.index("-Q") + 1] == "default,gpu" and "--max-tasks-per-child" in cmd
    follower = dataclasses.replace(leader, node_rank=1)
    cmd = worker_command(None, 1, False, None, follower)
    assert cmd[cmd.index("-Q") + 1] == "openrft.group.10.0.0.1-29500.node1"
    assert cmd[cmd.index("-n") + 1] == "group-node1@%h" and "prefork" in cmd  # a fresh process per join
    with pytest.raises(GroupConfigError, match="start it without --queues"):
        worker_command("gpu", 1, False, None, follower)
    with pytest.raises(GroupConfigError, match="--concurrency 1, not 2"):
        worker_command(None, 2, False, None, leader)
    # A lone worker is as before, whatever its concurrency.
    cmd = worker_command("gpu", 4, False, None, WorkerGroup())
    assert cmd[cmd.index("-Q") + 1] == "gpu" and cmd[cmd.index("--concurrency") + 1] == "4"


def test_a_celery_training_worker_checks_its_group_at_start(app_settings, monkeypatch) -> None:
    def worker(queues: list[str], concurrency: int) -> SimpleNamespace:
        consume = SimpleNamespace(consume_from={q: object() for q in queues})
        return SimpleNamespace(
            app=SimpleNamespace(amqp=SimpleNamespace(queues=consume)), concurrency=concurrency
        )

    monkeypatch.setattr(app_settings, "worker_nnodes", 2)
    monkeypatch.setattr(app_settings, "worker_master_port", 29500)
    worker_group_mod.check_worker(worker(["default"], 4), app_settings)  # the light worker: no group
    worker_group_mod.check_worker(worker(["gpu"], 1), app_settings)
    with pytest.raises(GroupConfigError, match="--concurrency 1"):
        worker_group_mod.check_worker(worker(["gpu"], 2), app_settings)


# ---------------------------------------------------------------------------------------------------------------
# Gathering, without training
# ---------------------------------------------------------------------------------------------------------------


class Control:
    def __init__(self, request: Any = None) -> None:
        self.request = request

    def poll(self) -> Any:
        return self.request


def small_spec(tmp_path: Path) -> JobSpec:
    return JobSpec(
        job_id="ftjob-group",
        method="reinforcement",
        base_model="tiny-test",
        model_source="tiny",
        training_file=tmp_path / "train.jsonl",
    )


GROUP = WorkerGroup(nnodes=2, master_addr="127.0.0.1", master_port=29500)


def test_a_cancel_while_the_group_gathers_ends_the_wait(tmp_path: Path, monkeypatch) -> None:
    sent: list[tuple[str, JoinRequest]] = []
    monkeypatch.setattr(worker_group_mod, "send_join", lambda queue, request: sent.append((queue, request)))
    launch = gather(
        GROUP,
        small_spec(tmp_path),
        tmp_path / "w",
        attempt=1,
        processes=1,
        backend="gloo",
        control=Control("cancel"),
        timeout_s=60,
    )
    assert launch is None
    ((queue, request),) = sent
    assert queue == "openrft.group.127.0.0.1-29500.node1" and request.node_rank == 1
    assert (
        Path(request.workdir).is_absolute()
        and JobSpec.model_validate_json(request.spec).job_id == "ftjob-group"
    )
    # A follower that comes now goes home: the attempt it was sent is over.
    assert join_launch(dataclasses.asdict(request)) == REFUSED


def test_a_launch_that_cannot_be_sent_fails_at_once(tmp_path: Path, monkeypatch) -> None:
    def broker_away(queue: str, request: JoinRequest) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(worker_group_mod, "send_join", broker_away)
    with pytest.raises(GroupIncomplete, match="could not send node 1 of its group the launch"):
        gather(
            GROUP,
            small_spec(tmp_path),
            tmp_path / "w",
            attempt=1,
            processes=1,
            backend="gloo",
            control=Control(),
            timeout_s=60,
        )
    assert '"state": "aborted"' in group_file(tmp_path / "w").read_text()


def test_a_follower_that_cannot_see_the_workdir_refuses(tmp_path: Path, caplog) -> None:
    request = JoinRequest(
        job_id="ftjob-x",
        attempt=1,
        token="t",
        spec=small_spec(tmp_path).model_dump_json(),
        workdir=str(tmp_path / "elsewhere"),
        processes=1,
        backend="gloo",
        nnodes=2,
        node_rank=1,
        master_addr="127.0.0.1",
        master_port=29500,
        timeout_s=5,
    )
    assert join_launch(dataclasses.asdict(request)) == REFUSED
    assert "cannot see the job's working directory" in caplog.text and "same path" in caplog.text
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------------------------------------------------------
# Through the runner
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def group_job(client, key):  # type: ignore[no-untyped-def]
    """A reinforcement job of one process per node: 12 rows, SFT steps 1-3, RL steps 4-5, checkpoints at 3 and 5."""
    return lambda: queued_rl_job(client, key, OPENRFT)


@pytest.fixture
def two_nodes(app_settings, monkeypatch):
    """This process is node 0 of a group of 2 at 127.0.0.1 (a fresh port); returns node 1's settings."""
    monkeypatch.setattr(app_settings, "worker_nnodes", 2)
    monkeypatch.setattr(app_settings, "worker_node_rank", 0)
    monkeypatch.setattr(app_settings, "worker_master_addr", "127.0.0.1")
    monkeypatch.setattr(app_settings, "worker_master_port", free_port())
    return app_settings.model_copy(update={"worker_node_rank": 1})


class Follower:
    """The follower's worker: each join request the leader sends runs in a thread, as its Celery task would."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.requests: list[tuple[str, JoinRequest]] = []
        self.codes: list[int] = []
        self.threads: list[threading.Thread] = []

    def send(self, queue: str, request: JoinRequest) -> None:
        self.requests.append((queue, request))

        def run() -> None:
            self.codes.append(join_launch(dataclasses.asdict(request), settings=self.settings))

        self.threads.append(threading.Thread(target=run, name=f"node-{request.node_rank}", daemon=True))
        self.threads[-1].start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)
            assert not thread.is_alive()


def test_a_follower_that_never_joins_fails_the_job_quickly(group_job, two_nodes, app_settings, monkeypatch):
    from workers.runner import run_training

    sent: list[str] = []
    monkeypatch.setattr(worker_group_mod, "send_join", lambda queue, request: sent.append(queue))
    monkeypatch.setattr(app_settings, "worker_join_timeout_seconds", 1.0)
    job_id = group_job()
    started = time.monotonic()
    assert run_training(job_id, worker="node0", task_id=None) == "failed"
    assert time.monotonic() - started < 30
    port = app_settings.worker_master_port
    queue = f"openrft.group.127.0.0.1-{port}.node1"
    assert sent == [queue]
    job = job_row(job_id)
    assert job.status == "failed" and job.error["code"] == "worker_group_error"
    message = job.error["message"]
    assert "node 1 of this worker's group of 2 did not join within 1 s" in message
    assert f"openrft worker --nnodes 2 --node-rank 1 --master-addr 127.0.0.1 --master-port {port}" in message
    assert queue in message and "same path" in message
    assert str(app_settings.home) not in message  # paths stay in the worker's log
    assert not ranks_of_this_process()  # nothing was launched


def test_a_follower_that_refuses_fails_the_job_with_its_reason(
    group_job, two_nodes, app_settings, monkeypatch
):
    from workers.runner import run_training

    elsewhere = two_nodes.model_copy(update={"worker_master_port": app_settings.worker_master_port + 1})
    follower = Follower(elsewhere)
    monkeypatch.setattr(worker_group_mod, "send_join", follower.send)
    job_id = group_job()
    assert run_training(job_id, worker="node0", task_id=None) == "failed"
    follower.join()
    assert follower.codes == [REFUSED]
    message = job_row(job_id).error["message"]
    assert "refused to join (node 1: node 0 launches node 1 of 2 at 127.0.0.1:" in message
    assert "this worker was started as node 1 of 2" in message


class KillFollowerRank:
    """The leader's sink, passed through; at the metrics of RL step ``step`` it SIGKILLs the follower's rank (after
    the checkpoint of the step before: the job has a state to resume from)."""

    def __init__(self, sink: Any, step: int) -> None:
        self.sink = sink
        self.step = step
        self.killed: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self.sink.metrics(text, data)
        if data.get("step") == self.step and data.get("stage") == "rl" and self.killed is None:
            self.killed = follower_rank()
            os.kill(self.killed, signal.SIGKILL)


def follower_rank() -> int:
    """The pid of rank 1: the process that runs node 1's copy of the spec (torchrun's child, with its RANK)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"job-node1.json" in cmdline and b"RANK=1" in env:
            return int(proc.name)
    raise AssertionError("no rank runs node 1's spec")


@pytest.mark.slow
def test_two_nodes_run_one_job_and_a_dead_follower_rank_requeues_it(group_job, two_nodes, monkeypatch):
    """Attempt 1: node 1's rank is killed at RL step 4; node 0's rank fails at its next collective and the job is
    re-queued. Attempt 2: the group gathers again, resumes from step 3's checkpoint and succeeds, the job's
    events telling one story (each step once, from rank 0)."""
    import trainer.launch
    from workers.runner import run_training

    follower = Follower(two_nodes)
    monkeypatch.setattr(worker_group_mod, "send_join", follower.send)
    real = trainer.launch.launch_job
    killers: list[KillFollowerRank] = []

    def killing(spec, sink, control, workdir, launch, **kw):
        assert (launch.nnodes, launch.node_rank, launch.nproc, launch.chosen_backend) == (2, 0, 1, "gloo")
        killers.append(KillFollowerRank(sink, step=4))
        return real(spec, killers[-1], control, workdir, launch, **kw)

    monkeypatch.setattr(trainer.launch, "launch_job", killing)
    job_id = group_job()
    assert run_training(job_id, worker="node0", task_id=None) == "requeued"
    follower.join()
    assert killers[0].killed is not None and follower.codes[0] != 0
    wait_until(lambda: not ranks_of_this_process(), 10, what="node 0's ranks to end")
    job = job_row(job_id)
    assert job.status == "queued" and job.attempt == 1
    assert any(m.startswith("A training process died") and "re-queued" in m for m in events(job_id))

    monkeypatch.setattr(trainer.launch, "launch_job", real)
    assert run_training(job_id, worker="node0", task_id=None) == "succeeded"
    follower.join()
    assert follower.codes[1] == 0
    assert [r.attempt for _, r in follower.requests] == [1, 2]
    assert len({r.token for _, r in follower.requests}) == 2
    job = job_row(job_id)
    assert job.status == "succeeded" and job.attempt == 2 and job.fine_tuned_model
    msgs = events(job_id)
    assert "Training on the 2 machines of this worker's group, 1 process each, on the CPU (gloo)." in msgs
    assert any("Resuming at step 3" in m for m in msgs)
    assert training_steps(job_id) == [1, 2, 3, 4, 5]  # one voice: each step once
    assert msgs[-1] == "The job has successfully completed"
    workdir = Path(follower.requests[1][1].workdir)
    assert (workdir / "launch" / "node-1.joined").is_file()
    assert '"state": "go"' in group_file(workdir).read_text()
