"""Admin calls to one engine process (CPU server or vLLM): health, models, runtime adapter load/unload."""

from __future__ import annotations

from typing import Any

import httpx

from serving.errors import EngineUnavailableError, UpstreamError


def upstream_error_message(response: httpx.Response) -> str:
    """The message of a vLLM / OpenAI error body (``{"error": {...}}`` or the older flat shape) or the text."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip() or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return response.text.strip() or f"HTTP {response.status_code}"


class EngineClient:
    def __init__(self, base_url: str, http: httpx.AsyncClient, *, admin_timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout = admin_timeout

    async def health(self, *, deadline: float = 5.0) -> bool:
        try:
            response = await self._http.get(f"{self.base_url}/health", timeout=deadline)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def models(self) -> list[dict[str, Any]]:
        response = await self._http.get(f"{self.base_url}/v1/models", timeout=30.0)
        response.raise_for_status()
        return list(response.json().get("data", []))

    async def load_adapter(self, name: str, path: str) -> None:
        """Load ``path`` as adapter ``name``; already loaded counts as success (the call is idempotent)."""
        try:
            response = await self._http.post(
                f"{self.base_url}/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": path},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(
                f"Could not reach the inference engine to load an adapter: {exc}"
            ) from exc
        if response.status_code == 200:
            return
        message = upstream_error_message(response)
        if response.status_code == 400 and "already been loaded" in message:
            return
        raise UpstreamError(
            f"The inference engine could not load the adapter: {message}",
            status_code=500 if response.status_code >= 500 else 400,
            type="server_error" if response.status_code >= 500 else "invalid_request_error",
            code="adapter_load_failed",
        )

    async def unload_adapter(self, name: str) -> bool:
        """Unload adapter ``name``; False when the engine did not have it."""
        try:
            response = await self._http.post(
                f"{self.base_url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(f"Could not reach the inference engine: {exc}") from exc
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise UpstreamError(
                f"The inference engine could not unload the adapter: {upstream_error_message(response)}",
                code="adapter_unload_failed",
            )
        return True
