"""What every request method of this package's resources takes besides its own arguments: the SDK's per-call
``extra_headers``, ``extra_query``, ``extra_body`` and ``timeout``, turned into the SDK's request options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote

from openai import NotGiven, Omit, RequestOptions, Timeout
from openai._base_client import make_request_options

if TYPE_CHECKING:
    from openai._types import Body, Headers, Query

__all__ = ["RequestExtras", "given", "path_id", "request_options"]


class RequestExtras(TypedDict, total=False):
    extra_headers: Headers | None
    extra_query: Query | None
    extra_body: Body | None
    timeout: float | Timeout | NotGiven | None


def request_options(extras: RequestExtras, query: Mapping[str, Any] | None = None) -> RequestOptions:
    """The SDK's options for one call; like the SDK's own resources, it authenticates with the API key only."""
    return make_request_options(
        query={k: v for k, v in (query or {}).items() if v is not None} or None,
        security={"bearer_auth": True},
        **extras,
    )


def given(value: Any) -> Any:
    """``None`` for the SDK's ``omit`` marker: this package's arguments default to ``None``."""
    return None if isinstance(value, Omit) else value


def path_id(ident: str, safe: str = "") -> str:
    """An id as one URL path segment (model names keep ``:`` and ``/``, which the server's routes accept)."""
    if not ident:
        raise ValueError(f"Expected a non-empty id, got {ident!r}")
    return quote(ident, safe=safe)
