"""A group of training workers that runs each job across its machines, with a static rendezvous.

Every worker of a group is started with the same ``--nnodes N --master-addr A --master-port P`` (node 0's
address and a free port on it) and its own ``--node-rank R``. Node 0, the leader, takes jobs from the ``gpu``
queue as a lone worker does; nodes 1..N-1, the followers, consume only a queue of their own
(:func:`group_queue`), on which the leader sends them each job's launch to join (``workers.group``). The
rendezvous port is the group's, so a group runs one job at a time: every worker of it has ``--concurrency 1``.

The API side (``app.cli``) and the workers both name the queues here, so this module imports no worker code.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from core.queue import QUEUE_DEFAULT, QUEUE_GPU
from core.settings import Settings

GROUP_QUEUE_PREFIX = "openrft.group."


class GroupConfigError(ValueError):
    """The worker's group options do not make a group (raised at worker start, before any job)."""


def group_queue(master_addr: str, master_port: int, node_rank: int) -> str:
    """The queue node ``node_rank`` of the group meeting at ``master_addr:master_port`` consumes: the leader
    sends it the launches to join. Characters a queue name should not carry (an IPv6 address's colons) become
    ``_``."""
    addr = re.sub(r"[^A-Za-z0-9.-]", "_", master_addr)
    return f"{GROUP_QUEUE_PREFIX}{addr}-{master_port}.node{node_rank}"


def is_group_queue(name: str) -> bool:
    return name.startswith(GROUP_QUEUE_PREFIX)


@dataclass(frozen=True)
class WorkerGroup:
    """This worker's place in its group; ``nnodes == 1``: no group (a lone worker)."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None

    @property
    def multinode(self) -> bool:
        return self.nnodes > 1

    @property
    def is_leader(self) -> bool:
        return self.node_rank == 0

    @property
    def port(self) -> int:
        if self.master_port is None:
            raise GroupConfigError(_PORT_REQUIRED.format(n=self.nnodes))
        return self.master_port

    def queue(self, node_rank: int | None = None) -> str:
        """The group queue of ``node_rank`` (default: this node's)."""
        return group_queue(self.master_addr, self.port, self.node_rank if node_rank is None else node_rank)

    def command(self, node_rank: int) -> str:
        """The command that starts node ``node_rank`` of this group (for messages that say what to run)."""
        return (
            f"openrft worker --nnodes {self.nnodes} --node-rank {node_rank} "
            f"--master-addr {self.master_addr} --master-port {self.master_port}"
        )


_PORT_REQUIRED = (
    "--master-port (OPENRFT_WORKER_MASTER_PORT) is required with --nnodes {n}: a free port on node 0, the "
    "same on every worker of the group"
)


def worker_group(settings: Settings) -> WorkerGroup:
    return WorkerGroup(
        nnodes=settings.worker_nnodes,
        node_rank=settings.worker_node_rank,
        master_addr=settings.worker_master_addr,
        master_port=settings.worker_master_port,
    )


def worker_queues(group: WorkerGroup, queues: str | None) -> list[str]:
    """The queues a worker consumes: ``queues`` (default: default and gpu), or for a follower its group queue
    alone (it takes no job of its own: only the launches its leader sends)."""
    if not (group.multinode and not group.is_leader):
        return _names(queues or f"{QUEUE_DEFAULT},{QUEUE_GPU}")
    check_group(group, concurrency=1, queues=None)
    own = group.queue()
    if queues is not None and _names(queues) != [own]:
        raise GroupConfigError(
            f"node {group.node_rank} of a group consumes only its group's queue ({own}), where node 0 sends "
            "it the launches to join; start it without --queues"
        )
    return [own]


def _names(queues: str) -> list[str]:
    return [q.strip() for q in queues.split(",") if q.strip()]


def check_group(group: WorkerGroup, *, concurrency: int, queues: Collection[str] | None) -> None:
    """Refuse group options that cannot work, each with its remedy; ``queues`` None: not checked."""
    if group.nnodes < 1:
        raise GroupConfigError(f"--nnodes {group.nnodes}: a group has at least 1 node")
    if not 0 <= group.node_rank < group.nnodes:
        raise GroupConfigError(
            f"--node-rank {group.node_rank} is outside the group: with --nnodes {group.nnodes} the nodes are "
            f"0..{group.nnodes - 1}"
        )
    if not group.multinode:
        return
    if group.master_port is None:
        raise GroupConfigError(_PORT_REQUIRED.format(n=group.nnodes))
    if not 0 < group.master_port < 65536:
        raise GroupConfigError(f"--master-port {group.master_port} is not a port (1..65535)")
    if not group.master_addr.strip():
        raise GroupConfigError("--master-addr is empty: give node 0's address, reachable from every node")
    if concurrency != 1:
        raise GroupConfigError(
            f"a worker of a group runs one job at a time (the rendezvous port {group.master_port} is the "
            f"group's): start it with --concurrency 1, not {concurrency}"
        )
    if queues is None:
        return
    if group.is_leader and QUEUE_GPU not in queues:
        raise GroupConfigError(
            f"node 0 of a group takes the jobs from the {QUEUE_GPU} queue: add {QUEUE_GPU} to --queues"
        )
    if not group.is_leader and list(queues) != [group.queue()]:
        raise GroupConfigError(
            f"node {group.node_rank} of a group must consume only its group's queue {group.queue()}, "
            f"not {','.join(queues)}"
        )
