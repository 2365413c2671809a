"""A fake upstream that behaves like vLLM's OpenAI-compatible server, for proxy, client and supervisor tests.

Run in-process (``create_fake_vllm``) or as a process: ``python -m tests.serving.fake_vllm --port P
--served-model-name NAME``. What it copies from vLLM (``vllm/entrypoints/serve/lora/api_router.py``,
``openai/models/serving.py``, ``serve/utils/error_response.py`` and the chat streaming code):

- ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` exist only when ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``
  is set (without it they are FastAPI's plain 404 ``{"detail": "Not Found"}``); a second load of a name is a
  400 "already been loaded" unless ``load_inplace``; a missing directory is a 404; a rank above
  ``--max-lora-rank`` is a 500; success is a plain-text 200.
- Bodies are validated: not JSON -> 415 (``validate_json_request``), a missing or mistyped field -> 400 with an
  ``ErrorResponse`` (vLLM's ``RequestValidationError`` handler).
- Chat streams start with a role chunk, send one chunk per token, put ``finish_reason`` on the last one, and
  with ``stream_options.include_usage`` end with a ``choices: []`` usage chunk (``continuous_usage_stats``:
  usage on every chunk). With a reasoning parser the ``<think>`` text goes to ``reasoning`` (vLLM >= 0.11's
  key), without one it stays in ``content``.

Special behaviour is chosen by the last user message: ``"fail"`` -> 500, ``"break"`` -> the stream is cut
after one chunk, ``"gate"`` -> the stream waits after its first chunk until ``state.gate`` is set,
``"think"`` -> the answer is ``<think>r0 r1 </think>`` followed by the words.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel


@dataclass
class FakeState:
    served_model_name: str
    loras: dict[str, str] = field(default_factory=dict)
    load_calls: Counter[str] = field(default_factory=Counter)
    inplace_calls: Counter[str] = field(default_factory=Counter)
    unload_calls: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    load_delay: float = 0.0
    allow_runtime_lora: bool = True
    """VLLM_ALLOW_RUNTIME_LORA_UPDATING: without it the adapter routes do not exist."""
    max_lora_rank: int = 64
    reasoning_parser: str | None = None
    environ: dict[str, str] = field(default_factory=dict)
    """The process environment the fake saw at start (its CUDA_VISIBLE_DEVICES, for placement tests)."""


class LoadLoRAAdapterRequest(BaseModel):
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str
    lora_int_id: int | None = None


class Message(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class ChatRequest(BaseModel):
    model_config = {"extra": "allow"}

    model: str | None = None
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


async def validate_json_request(request: Request) -> None:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.split(";")[0].strip() != "application/json":
        from fastapi import HTTPException

        raise HTTPException(
            status_code=415, detail="Unsupported Media Type: Only 'application/json' is allowed"
        )


def _lora_rank(path: str) -> int:
    try:
        return int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r") or 0)
    except (OSError, ValueError):
        return 0


def _answer(last: str, max_tokens: int) -> list[str]:
    words = [f"w{i} " for i in range(max_tokens)]
    if last == "think":
        return ["<think>", "r0 ", "r1 ", "</think>", *words]
    return words


def create_fake_vllm(state: FakeState) -> FastAPI:
    app = FastAPI()
    state.environ = dict(os.environ)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, str(exc.errors()), "Bad Request")

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        cards = [{"id": state.served_model_name, "object": "model", "parent": None}]
        cards += [
            {"id": n, "object": "model", "root": p, "parent": state.served_model_name}
            for n, p in state.loras.items()
        ]
        return {"object": "list", "data": cards}

    @app.get("/debug/state")
    async def debug_state() -> dict[str, Any]:
        return {
            "loras": state.loras,
            "load_calls": dict(state.load_calls),
            "inplace_calls": dict(state.inplace_calls),
            "unload_calls": dict(state.unload_calls),
            "cuda_visible_devices": state.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    if state.allow_runtime_lora:

        @app.post("/v1/load_lora_adapter", dependencies=[Depends(validate_json_request)])
        async def load(body: LoadLoRAAdapterRequest) -> Any:
            name, path = body.lora_name, body.lora_path
            state.load_calls[name] += 1
            if body.load_inplace:
                state.inplace_calls[name] += 1
            if state.load_delay:
                await asyncio.sleep(state.load_delay)
            if not name or not path:
                return _error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
            if not body.load_inplace and name in state.loras:
                return _error(
                    400,
                    f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in "
                    "place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            if not await asyncio.to_thread(Path(path).exists):
                return _error(
                    404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
                )
            rank = await asyncio.to_thread(_lora_rank, path)
            if rank > state.max_lora_rank:
                return _error(
                    500,
                    f"LoRA rank {rank} is greater than max_lora_rank {state.max_lora_rank}.",
                    "InternalServerError",
                )
            state.loras[name] = path
            return Response(status_code=200, content=f"Success: LoRA adapter '{name}' added successfully.")

        @app.post("/v1/unload_lora_adapter", dependencies=[Depends(validate_json_request)])
        async def unload(body: UnloadLoRAAdapterRequest) -> Any:
            name = body.lora_name
            state.unload_calls[name] += 1
            if not name:
                return _error(
                    400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput"
                )
            if state.loras.pop(name, None) is None:
                return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            return Response(status_code=200, content=f"Success: LoRA adapter '{name}' removed successfully.")

    @app.post("/v1/chat/completions", dependencies=[Depends(validate_json_request)])
    async def chat(req: ChatRequest) -> Any:
        body = req.model_dump(exclude_unset=True)
        state.requests.append(body)
        model = req.model or state.served_model_name
        if model != state.served_model_name and model not in state.loras:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        last = str(req.messages[-1].content)
        if last == "fail":
            return _error(500, "engine exploded", "InternalServerError")
        tokens = _answer(last, int(req.max_completion_tokens or req.max_tokens or 5))
        text = "".join(tokens)
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        usage = {"prompt_tokens": 3, "completion_tokens": len(tokens), "total_tokens": 3 + len(tokens)}
        parse = state.reasoning_parser is not None
        if not req.stream:
            reasoning = None
            if parse and "</think>" in text:
                reasoning, text = text.removeprefix("<think>").split("</think>", 1)
            message = {
                "role": "assistant",
                "content": text,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "tool_calls": [],
                "reasoning": reasoning,
            }
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}
            return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        options = req.stream_options or StreamOptions(include_usage=False)

        def chunk(delta: dict[str, Any], finish: str | None, done_tokens: int) -> str:
            data: dict[str, Any] = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if options.include_usage and options.continuous_usage_stats:
                data["usage"] = {
                    "prompt_tokens": 3,
                    "completion_tokens": done_tokens,
                    "total_tokens": 3 + done_tokens,
                }
            return f"data: {_dumps(data)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""}, None, 0)
            in_think = False
            for i, token in enumerate(tokens):
                finish = "length" if i == len(tokens) - 1 else None
                delta: dict[str, Any]
                if parse and token == "<think>":
                    in_think = True
                    continue
                if parse and token == "</think>":
                    in_think = False
                    continue
                delta = {"reasoning": token} if in_think else {"content": token}
                yield chunk(delta, finish, i + 1)
                if i == 0 and last == "break":
                    raise RuntimeError("connection lost")
                if i == 0 and last == "gate":
                    await asyncio.to_thread(state.gate.wait, 10)
            if options.include_usage:
                yield f"data: {_dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--served-model-name", default="base")
    p.add_argument("--startup-delay", type=float, default=0.0)
    p.add_argument("--reasoning-parser", default=None)
    args = p.parse_args()
    time.sleep(args.startup_delay)
    allow = os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower() in ("1", "true")
    state = FakeState(
        args.served_model_name, allow_runtime_lora=allow, reasoning_parser=args.reasoning_parser
    )
    uvicorn.run(create_fake_vllm(state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
