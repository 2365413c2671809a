"""The ``endpoint`` grader (OpenRFT extension): POST ``{"sample", "item"}`` to a user URL, read a score.

The answer is a JSON number or an object with ``score`` (or ``reward``/``result``). Timeouts and connection
failures count as ``unresponsive_reward_error``, bad statuses and bodies as ``other_error``; both score 0.
The URL is user input: unless the deployment allows it, addresses in private, loopback, link-local and
reserved ranges are refused (the service's own network is not reachable through a grader), redirects are
not followed, and the body read is bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from trainer.graders.errors import GradingError
from trainer.graders.settings import GraderSettings

MAX_BODY_BYTES = 1 << 20


async def check_public(url: str) -> None:
    """Raise GradingError unless every address the URL's host resolves to is public."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise GradingError("unresponsive_reward_error", f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global or addr.is_multicast:
            raise GradingError(
                "other_error",
                f"endpoint {host!r} resolves to the non-public address {addr}; this deployment does not "
                "allow graders to call private networks (endpoint_allow_private_networks)",
            )


def parse_score(body: bytes) -> float:
    try:
        data = json.loads(body)
    except ValueError:
        raise GradingError("other_error", f"the endpoint's answer is not JSON: {body[:200]!r}") from None
    if isinstance(data, dict):
        data = next((data[k] for k in ("score", "reward", "result") if k in data), None)
    if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
        raise GradingError("other_error", f"the endpoint's answer has no numeric score: {body[:200]!r}")
    return float(data)


async def call_endpoint(
    client: httpx.AsyncClient, spec: dict[str, Any], payload: dict[str, Any], settings: GraderSettings
) -> float:
    url = spec["url"]
    if not settings.endpoint_allow_private_networks:
        await check_public(url)
    timeout = min(float(spec.get("timeout_s", settings.endpoint_timeout_s)), settings.endpoint_timeout_s)
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST",
                url,
                json=payload,
                headers=spec.get("headers") or {},
                timeout=timeout,
                follow_redirects=False,
            ) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise GradingError(
                            "other_error", f"the endpoint's answer exceeds {MAX_BODY_BYTES} bytes"
                        )
    except (TimeoutError, httpx.TimeoutException):
        raise GradingError(
            "unresponsive_reward_error", f"{url} did not answer within {timeout:g} s"
        ) from None
    except httpx.HTTPError as exc:
        raise GradingError("unresponsive_reward_error", f"{url}: {type(exc).__name__}: {exc}") from None
    if resp.status_code >= 300:
        raise GradingError("other_error", f"HTTP {resp.status_code} from {url}: {bytes(body[:300])!r}")
    return parse_score(bytes(body))
