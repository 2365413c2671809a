"""The ``endpoint`` grader (OpenRFT extension): POST ``{"sample", "item"}`` to a user URL, read a score.

The answer is a JSON number or an object with ``score`` (or ``reward``/``result``). Timeouts and connection
failures count as ``unresponsive_reward_error``, bad statuses and bodies as ``other_error``; both score 0.
The URL is user input: unless the deployment allows it, addresses in private, loopback, link-local and
reserved ranges are refused (the service's own network is not reachable through a grader), redirects are
not followed, and the body read is bounded. The host is looked up once and the request goes to the address
that was checked (Host header and TLS server name keep the name), so a DNS answer that changes between the
check and the connection (rebinding) cannot point the request at a private address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import socket
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import httpx

from trainer.graders.errors import GradingError
from trainer.graders.settings import GraderSettings
from trainer.public_urls import allowed_host, non_public

MAX_BODY_BYTES = 1 << 20


async def lookup(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def pin(
    url: str, allow_private: bool, allowed_hosts: Collection[str] = ()
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by a checked address, the Host header and the request extensions
    (TLS server name) that keep the name. Raise GradingError if the host does not resolve or, unless
    ``allow_private`` or the host is among the operator's ``allowed_hosts``, if any address it resolves to is not
    public."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise GradingError("other_error", f"the endpoint URL {url!r} has no valid port") from None
    allow_private = allow_private or allowed_host(host, port, allowed_hosts)
    try:
        addrs = [ipaddress.ip_address(a) for a in await lookup(host, port)]
    except (OSError, ValueError) as exc:
        raise GradingError("unresponsive_reward_error", f"cannot resolve {host!r}: {exc}") from None
    if not addrs:
        raise GradingError("unresponsive_reward_error", f"{host!r} resolves to no address")
    refused = non_public(addrs) if not allow_private else None
    if refused is not None:
        raise GradingError(
            "other_error",
            f"endpoint {host!r} resolves to the non-public address {refused}; this deployment does not "
            "allow graders to call private networks (an operator can list the host in OPENRFT_PRIVATE_URL_HOSTS)",
        )
    ip = f"[{addrs[0]}]" if addrs[0].version == 6 else str(addrs[0])
    netloc = ip if parts.port is None else f"{ip}:{parts.port}"
    if parts.username is not None:  # credentials in the URL travel as they were written
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"host": host_header}, extensions


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
    target, host, extensions = await pin(
        url, settings.endpoint_allow_private_networks, settings.private_url_hosts
    )
    timeout = min(float(spec.get("timeout_s", settings.endpoint_timeout_s)), settings.endpoint_timeout_s)
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST",
                target,
                json=payload,
                headers={
                    **{k: v for k, v in (spec.get("headers") or {}).items() if k.lower() != "host"},
                    **host,
                },
                timeout=timeout,
                follow_redirects=False,
                extensions=extensions,
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
