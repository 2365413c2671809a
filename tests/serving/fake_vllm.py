"""A fake upstream that speaks vLLM's OpenAI-compatible protocol, for proxy, client and supervisor tests.

Run in-process (``create_fake_vllm``) or as a process: ``python -m tests.serving.fake_vllm --port P
--served-model-name NAME``. Special model behaviour is chosen by the last user message:
``"fail"`` -> 500, ``"break"`` -> the stream is cut after one chunk, ``"gate"`` -> the stream waits after its
first chunk until ``state.gate`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


@dataclass
class FakeState:
    served_model_name: str
    loras: dict[str, str] = field(default_factory=dict)
    load_calls: Counter[str] = field(default_factory=Counter)
    unload_calls: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    load_delay: float = 0.0


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def create_fake_vllm(state: FakeState) -> FastAPI:
    app = FastAPI()

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
            "unload_calls": dict(state.unload_calls),
        }

    @app.post("/v1/load_lora_adapter")
    async def load(body: dict[str, Any]) -> Any:
        name, path = body.get("lora_name", ""), body.get("lora_path", "")
        state.load_calls[name] += 1
        if state.load_delay:
            await asyncio.sleep(state.load_delay)
        if name in state.loras:
            return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        if not await asyncio.to_thread(Path(path).exists):
            return _error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        state.loras[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload(body: dict[str, Any]) -> Any:
        name = body.get("lora_name", "")
        state.unload_calls[name] += 1
        if state.loras.pop(name, None) is None:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        state.requests.append(body)
        model = body.get("model")
        if model != state.served_model_name and model not in state.loras:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        last = str(body["messages"][-1]["content"])
        if last == "fail":
            return _error(500, "engine exploded", "InternalServerError")
        words = [f"w{i} " for i in range(int(body.get("max_tokens") or 5))]
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            return JSONResponse(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 3,
                        "completion_tokens": len(words),
                        "total_tokens": 3 + len(words),
                    },
                }
            )

        async def events() -> AsyncIterator[str]:
            for i, word in enumerate(words):
                finish = "length" if i == len(words) - 1 else None
                chunk = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": finish}],
                }
                yield f"data: {_dumps(chunk)}\n\n"
                if i == 0 and last == "break":
                    raise RuntimeError("connection lost")
                if i == 0 and last == "gate":
                    await asyncio.to_thread(state.gate.wait, 10)
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
    args = p.parse_args()
    time.sleep(args.startup_delay)
    uvicorn.run(
        create_fake_vllm(FakeState(args.served_model_name)),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
