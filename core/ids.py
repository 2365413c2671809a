"""OpenAI-shaped public ids: ``file-…``, ``ftjob-…``, ``ftevent-…``, ``ftckpt_…``."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def file_id() -> str:
    return f"file-{random_token()}"


def job_id() -> str:
    return f"ftjob-{random_token()}"


def event_id() -> str:
    return f"ftevent-{random_token()}"


def checkpoint_id() -> str:
    return f"ftckpt_{random_token()}"


def org_id() -> str:
    return f"org-{random_token()}"


def key_id() -> str:
    return f"key_{random_token(16)}"
