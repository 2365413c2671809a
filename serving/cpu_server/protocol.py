"""The CPU engine's wire format: request models of the OpenAI-compatible endpoints (the subset it serves),
vLLM's error shape and the SSE framing.

Extra fields are accepted and ignored, as vLLM and OpenAI do, so SDK additions never break a call. Options
the engine cannot honour (tools, logprobs) are refused with a 400 instead of ignored; ``response_format`` is
honoured by constrained decoding (serving.engine.structured).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    ignore_eos: bool = False

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatCompletionRequest(_Request):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.logprobs:
            raise ValueError("logprobs are not supported by this engine")
        if self.tools and self.tool_choice != "none":
            raise ValueError("tool calling is not supported by this engine")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.logprobs is not None:
            raise ValueError("logprobs are not supported by this engine")
        if self.suffix:
            raise ValueError("suffix is not supported by this engine")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of other than n is not supported by this engine")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list of texts or token id lists."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        ints = [x for x in p if isinstance(x, int)]
        if len(ints) == len(p):
            return [ints]
        return [x for x in p if isinstance(x, str | list)]


class LoadLoraAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    lora_name: str = ""
    lora_path: str = ""
    load_inplace: bool = False


class UnloadLoraAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    lora_name: str = ""
    lora_int_id: int | None = None


FinishReason = Literal["stop", "length"]


class EngineHTTPError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "Error"),
            "param": param,
            "code": status,
        }
    }
    return JSONResponse(body, status_code=status)


def dumps(obj: Any) -> str:
    # Compact like vLLM's pydantic output; the API's proxy relies on '"model":"…"' having no spaces.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(obj: Any) -> str:
    return f"data: {dumps(obj)}\n\n"


def sse_error(exc: Exception) -> str:
    """An error after the stream started (its status is sent already): one event in vLLM's shape."""
    if isinstance(exc, EngineHTTPError):
        return sse(
            {"error": {"message": exc.message, "type": ERROR_TYPES.get(exc.status), "code": exc.status}}
        )
    return sse({"error": {"message": str(exc), "type": "InternalServerError", "code": 500}})


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise EngineHTTPError(400, "Only text content parts are supported.", param="messages")
        return "".join(parts)
    raise EngineHTTPError(400, "Message content must be a string or a list of text parts.", param="messages")
