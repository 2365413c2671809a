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
    from openai import (
        APIConnectionError,
        APIError,
        APIResponseValidationError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        ConflictError,
        InternalServerError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        UnprocessableEntityError,
    )
    from openai._base_client import AsyncPaginator
    from openai.pagination import AsyncCursorPage, SyncCursorPage

    from openrft._client import AsyncOpenRFT, OpenRFT
    from openrft._exceptions import FileValidationError, OpenRFTError

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


# Where the names of __all__ live; the rest (but __version__) are the SDK's exceptions, from `openai`.
_WHERE = {
    "AsyncOpenRFT": "openrft._client",
    "OpenRFT": "openrft._client",
    "FileValidationError": "openrft._exceptions",
    "OpenRFTError": "openrft._exceptions",
    "AsyncCursorPage": "openai.pagination",
    "SyncCursorPage": "openai.pagination",
    "AsyncPaginator": "openai._base_client",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'openrft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE.get(name, "openai")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
