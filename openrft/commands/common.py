"""What every client command shares: connection options, the client, JSON arguments and printing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from openai import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from openrft import OpenRFT

# Results go to stdout; progress and notices to stderr, so `--json` output can be piped.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 1."""


def connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--api-key", help="API key (default: $OPENRFT_API_KEY, then $OPENRFT_HOME/api_key)")
    group.add_argument(
        "--base-url", help="API base URL (default: $OPENRFT_BASE_URL or http://127.0.0.1:8000/v1)"
    )
    group.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    return parent


def json_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print the raw JSON objects")
    return parent


def make_client(args: argparse.Namespace) -> OpenRFT:
    return OpenRFT(api_key=args.api_key, base_url=args.base_url, timeout=args.timeout)


def json_arg(value: str, what: str) -> Any:
    """A JSON value given inline or as ``@path``."""
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise CLIError(f"{what}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc


def json_object_arg(value: str, what: str) -> dict[str, Any]:
    parsed = json_arg(value, what)
    if not isinstance(parsed, dict):
        raise CLIError(f"{what}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def scalar(text: str) -> Any:
    """``key=value`` values: JSON when they parse (numbers, true, null, objects), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def pairs(items: Sequence[str] | None, what: str, *, parse: bool = True) -> dict[str, Any]:
    """``k=v`` arguments as a dict; dotted keys nest (``rl.max_steps=4`` -> ``{"rl": {"max_steps": 4}}``)."""
    result: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"{what}: expected KEY=VALUE, got {item!r}")
        node = result
        *parents, leaf = key.split(".") if parse else [key]
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CLIError(f"{what}: {key!r} conflicts with an earlier value")
            node = child
        node[leaf] = scalar(value) if parse else value
    return result


def when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def print_json(objects: BaseModel | Iterable[BaseModel]) -> None:
    """The objects as the API sent them. ``warnings=False``: the SDK types a grader by OpenAI's grader types,
    and one of this service's own (``multiple_choice``) is printed as sent, without pydantic's complaint."""
    if isinstance(objects, BaseModel):
        out.print_json(objects.to_json(warnings=False))
    else:
        out.print_json(json.dumps([o.to_dict(mode="json", warnings=False) for o in objects]))


def print_object(obj: BaseModel, title: str, rows: Sequence[tuple[str, Any]], *, as_json: bool) -> None:
    """What every ``get`` command prints: a FIELD/VALUE table under the object's id, or with ``--json``
    the object as the API sent it."""
    if as_json:
        print_json(obj)
        return
    out.print(Text(title, style="bold"))
    print_table(("FIELD", "VALUE"), rows, empty="")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str) -> None:
    """A table on a terminal; tab-separated lines (header first) when piped, so nothing is truncated."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    if not cells:
        err.print(empty)
        return
    if not out.is_terminal:
        for line in (list(columns), *cells):
            print("\t".join(line))
        return
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in cells:
        table.add_row(*(Text(c) for c in row))  # user text such as "[A]" is not console markup
    out.print(table)
