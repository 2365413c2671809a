"""OpenRFT: the Python client SDK (and the ``openrft`` CLI) of the self-hosted reinforcement fine-tuning
service, built on the official ``openai`` SDK; nothing of the server is imported.

The names below load on first use: the server imports :mod:`openrft.validation` (the JSONL rules it shares with
the client) without loading the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from openrft._version import __version__

if TYPE_CHECKING:
    from openai._base_client import AsyncPaginator
    from openai.pagination import AsyncCursorPage, SyncCursorPage

    from openrft._client import AsyncOpenRFT, OpenRFT
    from openrft._exceptions import (
        APIConnectionError,
        APIError,
        APIResponseValidationError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        ConflictError,
        FileValidationError,
        InternalServerError,
        NotFoundError,
        OpenRFTError,
        PermissionDeniedError,
        RateLimitError,
        UnprocessableEntityError,
    )

_CLIENT = ("AsyncOpenRFT", "OpenRFT")
_PAGES = ("AsyncCursorPage", "SyncCursorPage")
_EXCEPTIONS = (
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "FileValidationError",
    "InternalServerError",
    "NotFoundError",
    "OpenRFTError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
)
_WHERE = {
    **dict.fromkeys(_CLIENT, "openrft._client"),
    **dict.fromkeys(_PAGES, "openai.pagination"),
    "AsyncPaginator": "openai._base_client",
    **dict.fromkeys(_EXCEPTIONS, "openrft._exceptions"),
}

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncCursorPage",
    "AsyncOpenRFT",
    "AsyncPaginator",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "FileValidationError",
    "InternalServerError",
    "NotFoundError",
    "OpenRFT",
    "OpenRFTError",
    "PermissionDeniedError",
    "RateLimitError",
    "SyncCursorPage",
    "UnprocessableEntityError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'openrft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
