"""docs/cli.md, generated from the ``openrft`` command's own parser so the page cannot drift from it:
``python -m openrft.cli_doc docs/cli.md`` (``make openapi`` runs it; a test checks the committed page)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openrft._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, HOME_ENV

INTRO = f"""\
# The `openrft` command

Generated from the command's parser by `python -m openrft.cli_doc docs/cli.md` (`make openapi`); do not edit by
hand. `openrft COMMAND --help` prints the same.

Client commands talk to a running service over HTTP. Where they find it and the key:

| Variable | Default | Meaning |
|---|---|---|
| `{API_KEY_ENV}` | the key file below | API key (`--api-key` overrides it) |
| `{BASE_URL_ENV}` | `{DEFAULT_BASE_URL}` | The service's API (`--base-url` overrides it) |
| `{HOME_ENV}` | `~/.openrft` | The embedded service's home; its `api_key` file (written by the first `openrft serve`) is the key when none is given. Server commands store everything here (`--home` overrides it) |

Every client command also takes `--api-key`, `--base-url` and `--timeout SECONDS` (per request, default 600).
Results go to stdout (tab-separated when piped, `--json` for the raw objects); progress and notices go to
stderr. A user mistake or an API error is one line on stderr, `openrft: error: ...`, with exit status 1.
The server commands (`serve`, `worker`, `migrate`, `keys`) read the service's environment variables
(README, "Configuration").
"""


# Every client command has these; the introduction describes them once.
_CONNECTION = {"api_key", "base_url", "timeout"}


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            found += [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return found


def _flags(action: argparse.Action) -> str:
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if not action.option_strings:
        return f"`{metavar}`"
    value = "" if action.nargs == 0 else " " + metavar
    return ", ".join(f"`{flag}{value}`" for flag in action.option_strings)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.required:
        return "required" if action.required else ""
    return f"`{action.default}`"


def _section(path: str, parser: argparse.ArgumentParser, summary: str, out: list[str]) -> None:
    subs = _subcommands(parser)
    if subs:
        for name, sub, help_text in subs:
            _section(f"{path} {name}", sub, help_text, out)
        return
    out.append(f"## `{path}`\n")
    if summary:
        out.append(summary[0].upper() + summary[1:] + ".\n")
    rows = [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)
        and a.help is not argparse.SUPPRESS
        and a.dest not in _CONNECTION
    ]
    if rows:
        out.append("| Argument | Default | Meaning |\n|---|---|---|")
        for a in rows:
            meaning = (a.help or "").replace("|", "\\|") % {"default": a.default}
            if a.choices and not isinstance(a, argparse._SubParsersAction):
                meaning += f" (one of {', '.join(map(str, a.choices))})"
            out.append(f"| {_flags(a)} | {_default(a)} | {meaning} |")
        out.append("")


def cli_markdown() -> str:
    from openrft.cli import build_parser

    out = [INTRO]
    for name, sub, help_text in _subcommands(build_parser()):
        _section(f"openrft {name}", sub, help_text, out)
    return "\n".join(out)


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path("docs/cli.md")
    target.write_text(cli_markdown())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
