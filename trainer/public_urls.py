"""User-supplied URLs reach public addresses only: a teacher's or process reward judge's ``base_url``, a rollout
server, an endpoint grader. A job pointed at the service's own network (loopback, private, link-local, reserved
ranges) is refused, unless the operator lists the host in ``OPENRFT_PRIVATE_URL_HOSTS`` (an in-cluster model
server, say).

Two checks: :func:`literal_refusal` at job creation, without a DNS lookup (``localhost``, a private address
written as such); and, at every request, :class:`PublicTransport`, which resolves the host once, refuses if any
of its addresses is not public, and connects to the address it checked (the Host header and the TLS server name
keep the name), so a DNS answer that changes between the check and the connection cannot point the request
elsewhere. What such an upstream answers is never copied into a user-visible error (trainer.chat_client).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PrivateAddressError(ValueError):
    """A user URL whose host is not a public address (and not on the operator's list)."""


def non_public(addrs: Collection[IPAddress]) -> IPAddress | None:
    """The first address that is not a public unicast one, if any."""
    return next((a for a in addrs if not a.is_global or a.is_multicast), None)


def allowed_host(host: str, port: int | None, allowed: Collection[str]) -> bool:
    """The operator listed this host (by name or address, with or without its port)."""
    host = host.lower().strip("[]")
    return host in allowed or (port is not None and f"{host}:{port}" in allowed)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def literal_refusal(url: str, allowed: Collection[str] = ()) -> str | None:
    """Why ``url`` is refused without looking its host up: a loopback name or a non-public address written as
    such; None when it may go on (the request itself checks what the name resolves to)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return f"{url!r} has no valid port"
    if not host:
        return f"{url!r} names no host"
    if allowed_host(host, port or _default_port(parts.scheme), allowed):
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host!r} is this machine"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    return f"{addr} is not a public address" if non_public([addr]) else None


def resolve(host: str, port: int) -> list[IPAddress]:
    return [
        ipaddress.ip_address(str(info[4][0]))
        for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    ]


def _refused(host: str, addr: IPAddress) -> str:
    return (
        f"{host!r} resolves to the non-public address {addr}; this deployment does not let user URLs reach "
        "private networks (an operator can list the host in OPENRFT_PRIVATE_URL_HOSTS)"
    )


class PublicTransport(httpx.HTTPTransport):
    """An httpx transport that sends each request to a checked public address of its host (see the module)."""

    def __init__(self, allowed: Collection[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed = {h.lower() for h in allowed}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host, port = url.host, url.port or _default_port(url.scheme)
        if allowed_host(host, port, self.allowed):
            return super().handle_request(request)
        try:
            addrs = resolve(host, port)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host!r}: {exc}", request=request) from None
        bad = non_public(addrs)
        if bad is not None:
            raise PrivateAddressError(_refused(host, bad))
        request.headers["Host"] = url.netloc.decode("ascii").rsplit("@", 1)[-1]
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        request.url = url.copy_with(host=str(addrs[0]))
        return super().handle_request(request)
