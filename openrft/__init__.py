"""OpenRFT: the Python client SDK (and the ``openrft`` CLI) of the self-hosted reinforcement fine-tuning
service. Light on purpose: httpx, pydantic and rich; nothing of the server is imported."""

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
from openrft._version import __version__
from openrft.pagination import AsyncCursorPage, AsyncPaginator, SyncCursorPage

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
