"""The server's entry point: serve (the embedded default), worker, keys, migrate.

``openrft serve`` and the other server commands of the ``openrft`` CLI run ``python -m app.cli`` in their
place (installed as ``openrft-server`` too), so the light client package imports nothing of the server. The
arguments are defined once, in :func:`openrft.cli.add_server_commands`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from core.queue import QUEUE_GPU
from core.settings import get_settings
from core.worker_group import WorkerGroup, check_group, worker_group, worker_queues
from openrft.cli import SERVER_URL_FILE, add_server_commands, run_command


def _worker_cmd(queues: str, name: str, *, concurrency: int, beat: bool, prefork_fresh: bool) -> list[str]:
    cmd = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", queues, "-n", f"{name}@%h", "--concurrency", str(concurrency), "--loglevel", "INFO",
    ]  # fmt: skip
    if prefork_fresh:
        # Each training job gets a fresh process: model memory is returned to the OS when it ends.
        cmd += ["--pool", "prefork", "--max-tasks-per-child", "1"]
    else:
        cmd += ["--pool", "solo"]
    if beat:
        settings = get_settings()
        cmd += ["--beat", "--schedule", str(settings.home / "celerybeat-schedule")]
    return cmd


def spawn_embedded_workers(
    procs: list[subprocess.Popen[bytes]] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """The embedded default's workers: one for light work (+ the periodic reaper), one for training. Each
    is added to ``procs`` as soon as it is started, so a stop signal meanwhile still finds it."""
    settings = get_settings()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    procs = [] if procs is None else procs
    for queues, name, beat, fresh in (("default", "default", True, False), ("gpu", "gpu", False, True)):
        log = (settings.logs_dir / f"worker-{name}.log").open("ab")
        procs.append(
            subprocess.Popen(
                _worker_cmd(queues, name, concurrency=1, beat=beat, prefork_fresh=fresh),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )
        )
    return procs


def _stop_with_parent() -> None:
    """In a spawned worker, before it runs: SIGTERM (a warm Celery shutdown) when `openrft serve` dies, even by
    SIGKILL, which no handler of ours sees; the workers live in sessions of their own, so nothing else reaches
    them, and they would poll a home that may be gone (Linux: the parent-death signal)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def local_url(host: str, port: int) -> str:
    """The URL this machine reaches a server bound to ``host``:``port`` at (a wildcard bind is reached on
    loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Stop(Exception):
    """SIGTERM, re-raised by uvicorn once it has shut down (see :func:`serve`)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def serve(host: str = "127.0.0.1", port: int = 8000, *, with_workers: bool = True) -> int:
    import uvicorn

    from app.bootstrap import prepare
    from app.dashboard.login import issue_login

    url = local_url(host, port)
    if "public_base_url" not in get_settings().model_fields_set:
        # Model graders (here and in the workers spawned below) call this service at its real port.
        os.environ["OPENRFT_PUBLIC_BASE_URL"] = url + "/v1"
        get_settings.cache_clear()
    settings = get_settings()
    boot = prepare(settings)
    mode = "PostgreSQL" if not settings.is_sqlite else "SQLite"
    broker = "Redis" if settings.redis_url else "filesystem broker"
    print(f"OpenRFT: home {settings.home} ({mode}, {broker})", flush=True)
    if boot.new_key:
        print(f"OpenRFT: created a local API key for organization {settings.bootstrap_org!r}:", flush=True)
        print(f"  {boot.new_key}", flush=True)
        print(f"  (also saved to {settings.home / 'api_key'})", flush=True)
    print(f"OpenRFT: API {url}/v1 · dashboard {url}/dashboard/ · API docs {url}/docs", flush=True)
    token = issue_login(settings)
    if token is not None:
        print(
            f"OpenRFT: open the dashboard, logged in (a one-time link): {url}/dashboard/#login={token}",
            flush=True,
        )
    # The CLI finds this server here (after --base-url and OPENRFT_BASE_URL), whatever port it was given.
    server_url = settings.home / SERVER_URL_FILE
    server_url.write_text(url + "/v1\n")
    # uvicorn handles SIGTERM itself, then raises it again once the server is down. With the default
    # handler that kills this process before the workers are stopped (they would run on under PID 1);
    # with this one it is an exception, and the finally below stops them as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if with_workers:
            spawn_embedded_workers(procs)
        uvicorn.run("app.main:app", host=host, port=port, log_level="info", proxy_headers=True)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short
        stop_processes(procs)
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError):
            if server_url.read_text().strip() == url + "/v1":  # not another serve's, started since
                server_url.unlink()
    return 0


_GROUP_ENV = {
    "nnodes": "OPENRFT_WORKER_NNODES",
    "node_rank": "OPENRFT_WORKER_NODE_RANK",
    "master_addr": "OPENRFT_WORKER_MASTER_ADDR",
    "master_port": "OPENRFT_WORKER_MASTER_PORT",
}


def worker_command(
    queues: str | None, concurrency: int, beat: bool, name: str | None, group: WorkerGroup
) -> list[str]:
    """The Celery worker's command; refuses group options that make no group (GroupConfigError)."""
    consumed = worker_queues(group, queues)
    trains = QUEUE_GPU in consumed or not group.is_leader
    if trains:
        check_group(group, concurrency=concurrency, queues=consumed)
    default_name = f"group-node{group.node_rank}" if not group.is_leader else "-".join(consumed)
    return _worker_cmd(
        ",".join(consumed), name or default_name, concurrency=concurrency, beat=beat, prefork_fresh=trains
    )


def worker(
    queues: str | None,
    concurrency: int,
    beat: bool,
    name: str | None,
    *,
    gpus: str | None = None,
    group_options: dict[str, int | str | None] | None = None,
) -> int:
    # Read in the Celery process (workers.devices, workers.group) as the settings they stand for.
    if gpus is not None:
        os.environ["OPENRFT_WORKER_GPUS"] = gpus
    for option, value in (group_options or {}).items():
        if value is not None:
            os.environ[_GROUP_ENV[option]] = str(value)
    get_settings.cache_clear()
    # Settings production refuses, and group options that cannot work, fail here as one line.
    cmd = worker_command(queues, concurrency, beat, name, worker_group(get_settings()))
    from app.supervise import supervise

    return supervise(cmd)


def migrate() -> int:
    from app.bootstrap import prepare

    prepare(get_settings(), generate_key=False)
    print("database is at the latest migration")
    return 0


def keys_create(org: str, name: str | None) -> int:
    from app import auth
    from app.bootstrap import prepare
    from core.db.session import session_scope

    prepare(get_settings(), generate_key=False)
    key = auth.generate_key()
    with session_scope() as s:
        auth.add_key(s, auth.get_or_create_org(s, org), key, name=name)
    print(key)
    return 0


def keys_revoke(key: str) -> int:
    from app import auth
    from app.bootstrap import prepare
    from core.db.session import session_scope

    prepare(get_settings(), generate_key=False)
    with session_scope() as s:
        ok = auth.revoke_key(s, key)
    if not ok:
        print("openrft: no active key matches", file=sys.stderr)
        return 1
    print("revoked")
    return 0


def default_key_file() -> Path:
    return get_settings().home / "api_key"


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return serve(args.host, args.port, with_workers=not args.no_worker)
    if args.command == "worker":
        group_options = {option: getattr(args, option) for option in _GROUP_ENV}
        return worker(
            args.queues, args.concurrency, args.beat, args.name, gpus=args.gpus, group_options=group_options
        )
    if args.command == "migrate":
        return migrate()
    if args.keys_cmd == "create":
        return keys_create(args.org, args.name)
    return keys_revoke(args.key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openrft", description="OpenRFT: the service's own commands")
    add_server_commands(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv), _dispatch)


if __name__ == "__main__":
    sys.exit(main())
