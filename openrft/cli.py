"""The ``openrft`` command.

Server commands (serve, worker, migrate, keys) are parsed here (one definition, one help page) and run by the
server's own entry point, :mod:`app.cli`, in this process's place: the client SDK imports nothing of the server. Client commands (files, jobs, graders, models, chat, demo) talk to a
running service over HTTP; they live in :mod:`openrft.commands`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

from openrft._config import (
    API_KEY_ENV,
    BASE_URL_ENV,
    SERVER_URL_FILE,
    home_dir,
    key_file,
    resolve_base_url,
    served_url,
)

HOME_HELP = "where everything is stored (default: $OPENRFT_HOME or ~/.openrft)"


def _run_server(args: argparse.Namespace) -> int:
    """Server commands run the server's own entry point (``python -m app.cli``, or ``openrft-server``) in
    this process's place, with the same arguments: this package imports nothing of the server."""
    # The client-only install has the server's packages but not what they import (the [server] extra).
    missing = [m for m in ("app", "celery", "fastapi", "sqlalchemy") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"openrft: '{args.command}' needs the server install (pip install 'openrft[server,train]'); "
            f"missing here: {', '.join(missing)}"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "app.cli", *args.argv])
    return 1  # not reached: execv replaces the process


def add_server_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="start the embedded service (API + workers)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port to listen on; also this service's own URL for its graders and workers, unless "
        "OPENRFT_PUBLIC_BASE_URL is set",
    )
    p.add_argument("--home", help=HOME_HELP)
    p.add_argument("--no-worker", action="store_true", help="API only; run workers with 'openrft worker'")
    p.set_defaults(func=_run_server)

    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument(
        "--queues",
        "-Q",
        default=None,
        help="comma-separated: default, gpu (default: both; node 1 and up of a group: its group's own queue)",
    )
    p.add_argument("--concurrency", "-c", type=int, default=1, help="tasks run at once")
    p.add_argument("--beat", action="store_true", help="also run the periodic reaper (one worker only)")
    p.add_argument("--name", default=None, help="worker name (default: the queues)")
    p.add_argument(
        "--gpus",
        default=None,
        help="training GPUs, split in equal groups over the --concurrency slots (a job runs one process per GPU "
        "of its slot): auto (all visible), none, or a list like 0,1,2,3",
    )
    group = p.add_argument_group(
        "several machines",
        "a group of training workers runs each job on all its machines (static rendezvous): start one worker "
        "per machine with the same --nnodes, --master-addr and --master-port and its own --node-rank, each with "
        "--concurrency 1 and the jobs' working directories on a path every node mounts at the same place",
    )
    group.add_argument(
        "--nnodes",
        type=int,
        default=None,
        help="machines in this worker's group (default 1: no group; $OPENRFT_WORKER_NNODES)",
    )
    group.add_argument(
        "--node-rank",
        type=int,
        default=None,
        help="this machine's place in the group, 0..nnodes-1: node 0 takes the jobs from the gpu queue, the "
        "others join its launches (default 0; $OPENRFT_WORKER_NODE_RANK)",
    )
    group.add_argument(
        "--master-addr",
        default=None,
        help="node 0's address, reachable from every node of the group (default 127.0.0.1; "
        "$OPENRFT_WORKER_MASTER_ADDR)",
    )
    group.add_argument(
        "--master-port",
        type=int,
        default=None,
        help="a free port on node 0 for the group's rendezvous, the same on every node; required with "
        "--nnodes above 1 ($OPENRFT_WORKER_MASTER_PORT)",
    )
    p.add_argument("--home", help=HOME_HELP)
    p.set_defaults(func=_run_server)

    p = sub.add_parser("migrate", help="upgrade the database to the latest schema")
    p.add_argument("--home", help=HOME_HELP)
    p.set_defaults(func=_run_server)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_cmd", required=True)
    p = keys.add_parser("create", help="create an API key (and the organization if needed); prints the key")
    p.add_argument("--org", required=True, help="organization the key acts for (created if new)")
    p.add_argument("--name", help="a label for the key")
    p.add_argument("--home", help=HOME_HELP)
    p.set_defaults(func=_run_server)
    p = keys.add_parser("revoke", help="revoke an API key")
    p.add_argument("key", help="the key to revoke")
    p.add_argument("--home", help=HOME_HELP)
    p.set_defaults(func=_run_server)


SERVER_COMMANDS = frozenset({"serve", "worker", "migrate", "keys"})


def build_parser(*, client_commands: bool = True) -> argparse.ArgumentParser:
    """The whole command; without the client commands for a server command, which then never loads the
    client's SDK (about a second of start-up)."""
    parser = argparse.ArgumentParser(
        prog="openrft", description="OpenRFT: self-hosted reinforcement fine-tuning"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_server_commands(sub)
    if client_commands:
        from openrft.commands import add_client_commands

        add_client_commands(sub)
    return parser


def _api_error_line(exc: Exception, base_url: str | None = None) -> str | None:
    """The line for an error of the SDK, or None. The SDK is only looked at if it was loaded (the server's
    commands never load it, so cannot raise its errors)."""
    if "openai" not in sys.modules:
        return None
    from openai import APIConnectionError, APIStatusError, APITimeoutError

    from openrft._exceptions import status_line

    if isinstance(exc, APITimeoutError):
        return f"Request timed out: {exc.request.method} {exc.request.url.path}. Raise --timeout if the service is busy."
    if isinstance(exc, APIConnectionError):
        url = exc.request.url.copy_with(path="/", query=None)
        return f"Connection error: could not reach {url}. {_unreachable_hint(base_url)}"
    if isinstance(exc, APIStatusError):
        return status_line(exc)
    return None


def _error_line(exc: Exception, base_url: str | None = None) -> str:
    from pydantic import ValidationError

    api = _api_error_line(exc, base_url)
    if api is not None:
        return api
    from openrft._exceptions import NoAPIKeyError

    if isinstance(exc, NoAPIKeyError):  # the client's message speaks of api_key=...; a CLI user has flags
        return (
            f"No API key: pass --api-key or set {API_KEY_ENV}, or start the service once with `openrft serve` "
            f"(it writes one to {key_file()})."
        )
    if isinstance(exc, ValidationError):  # the server's settings: each message, without pydantic's frame
        return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _unreachable_hint(base_url: str | None) -> str:
    """What to do about a service that did not answer at ``base_url`` (what --base-url, OPENRFT_BASE_URL or
    OPENRFT_HOME/server_url named), without telling the user to start one that runs elsewhere."""
    where = f" at {base_url}" if base_url else ""
    served = served_url()
    if served and served.rstrip("/") != (base_url or "").rstrip("/"):
        return (
            f"Nothing answers{where}; openrft serve of this OPENRFT_HOME recorded {served}: drop --base-url / "
            f"{BASE_URL_ENV}, or pass --base-url {served}."
        )
    if served:
        return (
            f"openrft serve recorded{where} in {home_dir() / SERVER_URL_FILE}, but it does not answer: it has "
            "stopped or is still starting. Start it again with: openrft serve"
        )
    return (
        f"Nothing answers{where} and no openrft serve of this OPENRFT_HOME is running: start one with "
        f"`openrft serve`, or point the CLI at a running service with --base-url or {BASE_URL_ENV}."
    )


def _used_base_url(args: argparse.Namespace) -> str | None:
    try:
        return resolve_base_url(getattr(args, "base_url", None))
    except Exception:
        return None


def run_command(args: argparse.Namespace, func: Callable[[argparse.Namespace], int | None]) -> int:
    """Run one parsed command the way the CLI reports: mistakes are one line on stderr and exit status 1.
    The server's entry point (app.cli) runs its commands through this too."""
    if getattr(args, "home", None):
        os.environ["OPENRFT_HOME"] = args.home
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # user-facing: one readable line, no traceback
        print(f"openrft: error: {_error_line(exc, _used_base_url(args))}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    server_command = bool(argv) and argv[0] in SERVER_COMMANDS
    args = build_parser(client_commands=not server_command).parse_args(argv)
    args.argv = argv  # what a server command hands on to the server's entry point
    return run_command(args, args.func)


if __name__ == "__main__":
    sys.exit(main())
