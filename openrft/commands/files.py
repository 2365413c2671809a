"""``openrft files upload|list|get|content|delete``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openrft.commands.common import (
    CLIError,
    connection_options,
    err,
    json_option,
    make_client,
    out,
    print_json,
    print_object,
    print_table,
    when,
)
from openrft.validation import Method

VALIDATE_CHOICES = ("auto", "reinforcement", "supervised", "dpo", "none")


def infer_method(path: Path) -> Method:
    """The kind of fine-tuning data in ``path``, from its first parseable row (DPO pairs, a final
    assistant turn for supervised, else reinforcement, whose rows end with the user's turn)."""
    with path.open("rb") as fh:
        for raw in fh:
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(row, dict):
                continue
            if "preferred_output" in row:
                return "dpo"
            messages = row.get("messages")
            if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
                return "supervised" if messages[-1].get("role") == "assistant" else "reinforcement"
    return "reinforcement"


def validation_method(path: Path, validate: str, purpose: str) -> Method | None:
    if validate == "none" or (validate == "auto" and purpose != "fine-tune"):
        return None
    if validate == "auto":
        return infer_method(path)
    return validate  # type: ignore[return-value]


def upload(args: argparse.Namespace) -> int:
    client = make_client(args)
    for name in args.paths:
        path = Path(name)
        if not path.is_file():
            raise CLIError(f"no such file: {path}")
        method = validation_method(path, args.validate, args.purpose)
        f = client.files.create(path, purpose=args.purpose, validate=method)
        if args.json:
            print_json(f)
        else:
            checked = f", checked as {method} data" if method else ""
            out.print(f"{f.id}\t{f.filename}\t{f.bytes} bytes{checked}")
    return 0


def list_files(args: argparse.Namespace) -> int:
    files = list(make_client(args).files.list(purpose=args.purpose))
    if args.json:
        print_json(files)
        return 0
    print_table(
        ("ID", "FILENAME", "BYTES", "PURPOSE", "CREATED"),
        ((f.id, f.filename, f.bytes, f.purpose, when(f.created_at)) for f in files),
        empty="no files",
    )
    return 0


def get(args: argparse.Namespace) -> int:
    f = make_client(args).files.retrieve(args.file_id)
    rows = [
        ("filename", f.filename),
        ("bytes", f.bytes),
        ("purpose", f.purpose),
        ("status", f.status),
        ("status details", f.status_details),
        ("created", when(f.created_at)),
        ("expires", when(f.expires_at)),
    ]
    print_object(f, f.id, rows, as_json=args.json)
    return 0


def content(args: argparse.Namespace) -> int:
    """A file's bytes (a job's result files: metrics CSV, rollouts JSONL) to stdout or ``--output``."""
    data = make_client(args).files.content(args.file_id).content
    if args.output:
        Path(args.output).write_bytes(data)
        err.print(f"wrote {len(data)} bytes to {args.output}", markup=False)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


def delete(args: argparse.Namespace) -> int:
    make_client(args).files.delete(args.file_id)
    err.print(f"deleted {args.file_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    conn, js = connection_options(), json_option()
    files = sub.add_parser("files", help="upload and manage files").add_subparsers(
        dest="files_cmd", required=True
    )

    p = files.add_parser("upload", parents=[conn, js], help="upload JSONL files (checked locally first)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--purpose", default="fine-tune", help="what the file is for (fine-tune: training data)")
    p.add_argument(
        "--validate",
        choices=VALIDATE_CHOICES,
        default="auto",
        help="check the file before sending it, with the server's rules (auto: detect the data kind)",
    )
    p.set_defaults(func=upload)

    p = files.add_parser("list", parents=[conn, js], help="list files")
    p.add_argument("--purpose", help="only files with this purpose (fine-tune, fine-tune-results)")
    p.set_defaults(func=list_files)

    p = files.add_parser("get", parents=[conn, js], help="show a file object")
    p.add_argument("file_id")
    p.set_defaults(func=get)

    p = files.add_parser(
        "content", parents=[conn], help="a file's content, e.g. a job's result files (metrics CSV, rollouts)"
    )
    p.add_argument("file_id")
    p.add_argument("--output", "-o", metavar="PATH", help="write it here instead of to stdout")
    p.set_defaults(func=content)

    p = files.add_parser("delete", parents=[conn], help="delete a file")
    p.add_argument("file_id")
    p.set_defaults(func=delete)
