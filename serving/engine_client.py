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
        if isinstance(error, dict) and isinstance(error.get("detail"), str):  # FastAPI's own errors
            return str(error["detail"])
        if isinstance(error, str):
            return error
    return response.text.strip() or f"HTTP {response.status_code}"


class EngineClient:
    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        admin_timeout: float = 600.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout = admin_timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        """The engine's per-start secret (serving.supervisor): every call but /health carries it."""

    async def health(self, *, deadline: float = 5.0) -> bool:
        try:
            response = await self._http.get(f"{self.base_url}/health", timeout=deadline)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def models(self) -> list[dict[str, Any]]:
        response = await self._http.get(f"{self.base_url}/v1/models", timeout=30.0, headers=self.headers)
        response.raise_for_status()
        return list(response.json().get("data", []))

    async def _post_load(self, name: str, path: str, *, inplace: bool) -> httpx.Response:
        try:
            return await self._http.post(
                f"{self.base_url}/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": path, "load_inplace": inplace},
                timeout=self._timeout,
                headers=self.headers,
            )
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(
                f"Could not reach the inference engine to load an adapter: {exc}"
            ) from exc

    async def load_adapter(self, name: str, path: str, *, replace: bool = False) -> None:
        """Load ``path`` as adapter ``name``; ``replace`` swaps the weights of a loaded one in place.

        vLLM answers "already been loaded" to a second load of a name (and keeps the old weights) unless
        ``load_inplace`` is set; an engine that still says so gets an unload and a fresh load, so the weights
        served are always the ones at ``path``.
        """
        response = await self._post_load(name, path, inplace=replace)
        if response.status_code == 400 and "already been loaded" in upstream_error_message(response):
            if not replace:
                response = await self._post_load(name, path, inplace=True)
            if response.status_code == 400 and "already been loaded" in upstream_error_message(response):
                await self.unload_adapter(name)
                response = await self._post_load(name, path, inplace=False)
        if response.status_code == 200:
            return
        message = upstream_error_message(response)
        if response.status_code == 404 and message == "Not Found":
            # The route itself is missing: vLLM registers it only with runtime LoRA updating enabled.
            raise EngineUnavailableError(
                "The inference engine has no runtime adapter loading: start vLLM with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (the vLLM backend sets it; check the engine's "
                "environment)."
            )
        if "max_lora_rank" in message:
            # vLLM reports it as a 500; it is the deployment's limit, not an engine fault.
            raise UpstreamError(
                f"The inference engine could not load the adapter: {message}. The serving limit is "
                "OPENRFT_SERVING_MAX_LORA_RANK; raise it to serve this model.",
                status_code=400,
                type="invalid_request_error",
                code="adapter_rank_too_large",
            )
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
                f"{self.base_url}/v1/unload_lora_adapter",
                json={"lora_name": name},
                timeout=self._timeout,
                headers=self.headers,
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
