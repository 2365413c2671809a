"""The client commands of the ``openrft`` CLI (they talk to a running service over HTTP)."""

from __future__ import annotations

import argparse

from openrft.commands import chat, demo, files, graders, jobs, models

Subparsers = argparse._SubParsersAction


def add_client_commands(sub: Subparsers) -> None:
    for module in (files, jobs, graders, models, chat, demo):
        module.register(sub)
