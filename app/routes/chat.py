"""/v1/chat/completions and /v1/completions: proxied to the inference engine of the model's base model
(vLLM on GPU, the embedded CPU engine otherwise), streaming included."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.completion_fields import complete_body, complete_stream
from app.deps import PrincipalDep
from app.inference import ServingDep, model_lookup
from app.ratelimit import RateLimited
from app.schemas.common import ERROR_RESPONSES
from serving.proxy import ProxyStream
from serving.service import ServingService

router = APIRouter(tags=["inference"], responses={**ERROR_RESPONSES, 503: ERROR_RESPONSES[500]})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; fields beyond these are passed to the engine as they are."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str | list[str]
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A completion object, or with stream=true server-sent events ending in 'data: [DONE]'.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
}


async def _proxy(kind: str, body: dict[str, Any], serving: ServingService, org_pk: int) -> Response:
    # A ServingError raised here is answered by the API's domain error handler (app.errors).
    if kind == "chat":
        result = await serving.chat_completions(body, lookup=model_lookup(org_pk))
    else:
        result = await serving.completions(body, lookup=model_lookup(org_pk))
    if isinstance(result, ProxyStream):
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = result.chunks
        if result.status_code == 200:
            chunks = complete_stream(chunks, include_usage=include_usage)
        return StreamingResponse(
            chunks,
            status_code=result.status_code,
            media_type=result.media_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    content = result.content
    if result.status_code == 200 and result.media_type.startswith("application/json"):
        try:
            content = json.dumps(complete_body(json.loads(content)), ensure_ascii=False).encode()
        except ValueError:
            pass  # not JSON after all: passed on as the engine sent it
    return Response(content, status_code=result.status_code, media_type=result.media_type)


@router.post(
    "/chat/completions",
    response_class=JSONResponse,
    responses=_STREAM_DOC,
    dependencies=[Depends(RateLimited("chat"))],
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, principal: PrincipalDep, serving: ServingDep
) -> Response:
    return await _proxy("chat", body.model_dump(exclude_none=True), serving, principal.org_pk)


@router.post(
    "/completions",
    response_class=JSONResponse,
    responses=_STREAM_DOC,
    dependencies=[Depends(RateLimited("chat"))],
)
async def create_completion(
    body: CompletionRequest, request: Request, principal: PrincipalDep, serving: ServingDep
) -> Response:
    return await _proxy("completions", body.model_dump(exclude_none=True), serving, principal.org_pk)
