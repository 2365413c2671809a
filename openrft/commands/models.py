"""``openrft models list|get|delete``."""

from __future__ import annotations

import argparse

from openrft.commands.common import (
    connection_options,
    err,
    json_option,
    make_client,
    print_json,
    print_object,
    print_table,
    when,
)


def list_models(args: argparse.Namespace) -> int:
    models = list(make_client(args).models.list())
    if args.json:
        print_json(models)
        return 0
    print_table(
        ("ID", "PARENT", "OWNED BY", "CREATED"),
        ((m.id, m.parent, m.owned_by, when(m.created)) for m in models),
        empty="no models",
    )
    return 0


def get(args: argparse.Namespace) -> int:
    m = make_client(args).models.retrieve(args.model)
    rows = [("owned by", m.owned_by), ("parent", m.parent), ("root", m.root), ("created", when(m.created))]
    print_object(m, m.id, rows, as_json=args.json)
    return 0


def delete(args: argparse.Namespace) -> int:
    make_client(args).models.delete(args.model)
    err.print(f"deleted {args.model}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    conn, js = connection_options(), json_option()
    models = sub.add_parser("models", help="base and fine-tuned models").add_subparsers(
        dest="models_cmd", required=True
    )
    p = models.add_parser("list", parents=[conn, js], help="list models")
    p.set_defaults(func=list_models)
    p = models.add_parser("get", parents=[conn, js], help="show a model")
    p.add_argument("model")
    p.set_defaults(func=get)
    p = models.add_parser("delete", parents=[conn], help="delete a fine-tuned model")
    p.add_argument("model")
    p.set_defaults(func=delete)
