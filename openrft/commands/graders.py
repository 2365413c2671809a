"""``openrft graders run|validate``."""

from __future__ import annotations

import argparse
from typing import Any, cast

from openrft.commands.common import connection_options, json_object_arg, make_client, out, print_json


def run(args: argparse.Namespace) -> int:
    result = make_client(args).graders.run(
        grader=cast(Any, json_object_arg(args.grader, "--grader")),  # checked by the server
        model_sample=args.sample,
        item=json_object_arg(args.item, "--item") if args.item else None,
    )
    if args.json:
        print_json(result)
        return 0
    out.print(f"reward {result.reward:g}")
    for name, value in (result.sub_rewards or {}).items():
        out.print(f"  {name}: {value}")
    errors = {k: v for k, v in result.metadata.errors.to_dict().items() if v}
    if errors:
        out.print(f"grader errors: {', '.join(f'{k}={v}' for k, v in errors.items())}", markup=False)
    return 0


def validate(args: argparse.Namespace) -> int:
    grader = cast(Any, json_object_arg(args.grader, "--grader"))  # checked by the server
    print_json(make_client(args).graders.validate(grader=grader))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    conn = connection_options()
    graders = sub.add_parser("graders", help="try graders").add_subparsers(dest="graders_cmd", required=True)

    p = graders.add_parser("run", parents=[conn], help="score one model sample with a grader")
    p.add_argument("--grader", "-g", required=True, help="JSON or @grader.json")
    p.add_argument("--sample", "-s", required=True, help="the model's output text")
    p.add_argument("--item", "-i", help="the data row, as JSON or @item.json ({{ item.* }} in templates)")
    p.add_argument("--json", action="store_true", help="print the full result")
    p.set_defaults(func=run)

    p = graders.add_parser("validate", parents=[conn], help="check a grader and print its normalized form")
    p.add_argument("--grader", "-g", required=True, help="JSON or @grader.json")
    p.set_defaults(func=validate)
