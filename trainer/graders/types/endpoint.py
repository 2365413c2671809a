"""``endpoint`` (OpenRFT): POST ``{sample, item}`` to the user's HTTP service, which answers a score.

The request and its address checks are trainer.graders.endpoint's; this module is the type's fields and node.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from trainer.graders.errors import GraderValidationError, GradingError
from trainer.graders.fields import GraderFields, number
from trainer.graders.node import Node, Outcome, Runtime, Scope
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings


class EndpointGrader(GraderFields):
    """OpenRFT: POSTs {sample, item} to your HTTP service, which answers {"score": float}."""

    type: Literal["endpoint"]
    url: str = Field(description="http(s) URL; private addresses only where the deployment allows them.")
    headers: dict[str, str] | None = None
    timeout_s: float | None = Field(default=None, gt=0)


class EndpointNode(Node):
    def __init__(self, spec: dict[str, Any], settings: GraderSettings) -> None:
        super().__init__(spec)
        self.settings = settings
        self.pool = "endpoint:" + (urlsplit(spec["url"]).hostname or "")  # one connection pool per host name

    async def _one(self, scope: Scope, rt: Runtime) -> Outcome:
        from trainer.graders.endpoint import call_endpoint

        try:
            async with rt.endpoint_sem:
                payload = {"sample": scope["sample"], "item": scope.get("item")}
                return Outcome(await call_endpoint(rt.client(self.pool), self.spec, payload, self.settings))
        except GradingError as exc:
            return Outcome.failed(exc)

    async def _grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._one(s, rt) for s in scopes)))


class Endpoint(GraderType):
    name = "endpoint"
    order = 80
    schema = EndpointGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        url = out["url"]
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise GraderValidationError(f"{param}.url", "must be an http(s) URL")
        headers = out.get("headers")
        if headers is not None and (
            not isinstance(headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise GraderValidationError(f"{param}.headers", "must map header names to string values")
        if "timeout_s" in out and number(out["timeout_s"], f"{param}.timeout_s") <= 0:
            raise GraderValidationError(f"{param}.timeout_s", "must be positive")

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return EndpointNode(spec, settings)


GRADER_TYPE = Endpoint()
