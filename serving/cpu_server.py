"""The embedded CPU engine as a process speaking vLLM's OpenAI-compatible HTTP protocol.

    python -m serving.cpu_server --base-model-source SRC --served-model-name NAME --port P

Endpoints: ``/health``, ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` (both with SSE
streaming), and vLLM's runtime adapter endpoints ``/v1/load_lora_adapter`` / ``/v1/unload_lora_adapter``.
Errors use vLLM's shape ``{"error": {"message", "type", "param", "code": <status>}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from serving.engine.adapters import AdapterExistsError, AdapterUnknownError
from serving.engine.engine import Event, InferenceEngine, RequestDone, RequestRejected, SequenceDelta
from serving.engine.lora import AdapterFormatError
from serving.engine.reasoning import THINK_START, ReasoningSplitter, split_reasoning
from serving.engine.sampling import SamplingParams
from serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadLoraAdapterRequest,
    UnloadLoraAdapterRequest,
)

log = logging.getLogger("openrft.serving.cpu_server")


class EngineHTTPError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "Error"),
            "param": param,
            "code": status,
        }
    }
    return JSONResponse(body, status_code=status)


def _dumps(obj: Any) -> str:
    # Compact like vLLM's pydantic output; the API's proxy relies on '"model":"…"' having no spaces.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _sse(obj: Any) -> str:
    return f"data: {_dumps(obj)}\n\n"


def _message_text(content: Any) -> str:
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


async def _merge(streams: list[AsyncIterator[Any]]) -> AsyncGenerator[tuple[int, Any], None]:
    """Interleave several async iterators as ``(stream_index, item)``; closing the merge closes them all."""
    queue: asyncio.Queue[tuple[int, Any, BaseException | None, bool]] = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                await queue.put((i, item, None, False))
        except BaseException as exc:
            await queue.put((i, None, exc, True))
            return
        await queue.put((i, None, None, True))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item, exc, finished = await queue.get()
            if exc is not None:
                raise exc
            if finished:
                remaining -= 1
                continue
            yield i, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except (RuntimeError, asyncio.CancelledError):
                    pass


class EngineServer:
    """The HTTP handlers around one :class:`InferenceEngine`."""

    def __init__(
        self,
        engine: InferenceEngine,
        *,
        served_model_name: str,
        model_root: str,
        reasoning_parser: str | None = "think",
    ) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.served_model_name = served_model_name
        self.model_root = model_root
        self.reasoning = reasoning_parser == "think"
        self.created = int(time.time())

    # -- helpers -----------------------------------------------------------------------------------------
    def _lora_for(self, model: str | None) -> str | None:
        if model is None or model == self.served_model_name:
            return None
        if self.engine.adapters.is_registered(model):
            return model
        raise EngineHTTPError(404, f"The model `{model}` does not exist.", param="model")

    def _params(self, req: ChatCompletionRequest | CompletionRequest, max_tokens: int) -> SamplingParams:
        try:
            return SamplingParams(
                max_tokens=max_tokens,
                temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p,
                top_k=max(0, req.top_k or 0),
                n=req.n,
                stop=req.stop_list,
                stop_token_ids=tuple(req.stop_token_ids or ()),
                seed=req.seed,
                presence_penalty=req.presence_penalty,
                frequency_penalty=req.frequency_penalty,
                ignore_eos=req.ignore_eos,
            )
        except ValueError as exc:
            raise EngineHTTPError(400, str(exc)) from exc

    def _max_tokens(self, requested: int | None, prompt_len: int) -> int:
        if requested is not None:
            return requested
        left = self.engine.max_model_len - prompt_len
        if left < 1:
            raise EngineHTTPError(
                400,
                f"This model's maximum context length is {self.engine.max_model_len} tokens; "
                f"the prompt has {prompt_len}.",
            )
        return left

    def _start(self, prompt_ids: list[int], params: SamplingParams, lora: str | None) -> AsyncIterator[Event]:
        try:
            self.engine.validate(prompt_ids, params, lora)
        except RequestRejected as exc:
            raise EngineHTTPError(400, str(exc)) from exc
        except AdapterUnknownError as exc:
            raise EngineHTTPError(404, f"The model `{lora}` does not exist.", param="model") from exc
        return self.engine.generate(prompt_ids, params, lora)

    def _render_chat(self, req: ChatCompletionRequest) -> str:
        messages = []
        for message in req.messages:
            role = message.get("role")
            if role not in ("system", "developer", "user", "assistant", "tool"):
                raise EngineHTTPError(400, f"Unsupported message role {role!r}.", param="messages")
            messages.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _message_text(message.get("content")),
                }
            )
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=req.add_generation_prompt,
                **(req.chat_template_kwargs or {}),
            )
        except Exception as exc:
            raise EngineHTTPError(400, f"Cannot apply the chat template: {exc}", param="messages") from exc
        return str(text)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- chat ---------------------------------------------------------------------------------------------
    async def chat(self, req: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        lora = self._lora_for(req.model)
        prompt = self._render_chat(req)
        prompt_ids = self._encode(prompt)
        params = self._params(req, self._max_tokens(req.requested_max_tokens, len(prompt_ids)))
        events = self._start(prompt_ids, params, lora)
        in_reasoning = self.reasoning and prompt.rstrip().endswith(THINK_START)
        model = req.model or self.served_model_name
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            return StreamingResponse(
                self._chat_stream(events, req, params.n, model, rid, created, in_reasoning),
                media_type="text/event-stream",
            )
        texts = [""] * params.n
        finish: list[str | None] = [None] * params.n
        usage: dict[str, int] = {}
        async with aclosing(events) as stream:  # type: ignore[type-var]
            async for event in stream:
                if isinstance(event, SequenceDelta):
                    texts[event.index] += event.text
                    finish[event.index] = event.finish_reason or finish[event.index]
                else:
                    usage = _usage(event.prompt_tokens, event.completion_tokens)
        choices = []
        for i, text in enumerate(texts):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.reasoning:
                reasoning, content = split_reasoning(text, starts_in_reasoning=in_reasoning)
                message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish[i]})
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
        return JSONResponse(body)

    async def _chat_stream(
        self,
        events: AsyncIterator[Event],
        req: ChatCompletionRequest,
        n: int,
        model: str,
        rid: str,
        created: int,
        in_reasoning: bool,
    ) -> AsyncIterator[str]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            return _sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": choices,
                }
                | extra
            )

        def delta_choice(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

        splitters = [ReasoningSplitter(starts_in_reasoning=in_reasoning) for _ in range(n)]
        try:
            for i in range(n):
                yield chunk([delta_choice(i, {"role": "assistant", "content": ""})])
            async with aclosing(events) as stream:  # type: ignore[type-var]
                async for event in stream:
                    if isinstance(event, RequestDone):
                        if req.include_usage:
                            yield chunk([], usage=_usage(event.prompt_tokens, event.completion_tokens))
                        continue
                    delta: dict[str, Any] = {}
                    if self.reasoning:
                        reasoning, content = splitters[event.index].feed(event.text)
                        if event.finish_reason is not None:
                            more_r, more_c = splitters[event.index].finish()
                            reasoning, content = reasoning + more_r, content + more_c
                        if reasoning:
                            delta["reasoning_content"] = reasoning
                        if content:
                            delta["content"] = content
                    elif event.text:
                        delta["content"] = event.text
                    if delta or event.finish_reason is not None:
                        yield chunk([delta_choice(event.index, delta, event.finish_reason)])
        except EngineHTTPError as exc:
            yield _sse(
                {"error": {"message": exc.message, "type": _ERROR_TYPES.get(exc.status), "code": exc.status}}
            )
        except Exception as exc:
            log.exception("chat stream failed")
            yield _sse({"error": {"message": str(exc), "type": "InternalServerError", "code": 500}})
        yield "data: [DONE]\n\n"

    # -- completions ----------------------------------------------------------------------------------------
    async def completions(self, req: CompletionRequest) -> JSONResponse | StreamingResponse:
        lora = self._lora_for(req.model)
        prompts = req.prompts()
        prompt_ids = [self._encode(p) if isinstance(p, str) else p for p in prompts]
        prompt_texts = [p if isinstance(p, str) else self.tokenizer.decode(p) for p in prompts]
        streams = []
        for ids in prompt_ids:
            params = self._params(req, self._max_tokens(req.max_tokens, len(ids)))
            streams.append(self._start(ids, params, lora))
        model = req.model or self.served_model_name
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        n = req.n
        if req.stream:
            return StreamingResponse(
                self._completion_stream(streams, req, prompt_texts, model, rid, created),
                media_type="text/event-stream",
            )
        texts = [prompt_texts[i // n] if req.echo else "" for i in range(len(prompts) * n)]
        finish: list[str | None] = [None] * len(texts)
        prompt_tokens = completion_tokens = 0
        async with aclosing(_merge(streams)) as merged:
            async for p, event in merged:
                if isinstance(event, SequenceDelta):
                    texts[p * n + event.index] += event.text
                    finish[p * n + event.index] = event.finish_reason or finish[p * n + event.index]
                else:
                    prompt_tokens += event.prompt_tokens
                    completion_tokens += event.completion_tokens
        body = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": i, "text": t, "logprobs": None, "finish_reason": finish[i]}
                for i, t in enumerate(texts)
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
        }
        return JSONResponse(body)

    async def _completion_stream(
        self,
        streams: list[AsyncIterator[Event]],
        req: CompletionRequest,
        prompt_texts: list[str],
        model: str,
        rid: str,
        created: int,
    ) -> AsyncIterator[str]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            return _sse(
                {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": choices,
                }
                | extra
            )

        n = req.n
        prompt_tokens = completion_tokens = 0
        try:
            if req.echo:
                for i in range(len(prompt_texts) * n):
                    yield chunk(
                        [{"index": i, "text": prompt_texts[i // n], "logprobs": None, "finish_reason": None}]
                    )
            async with aclosing(_merge(streams)) as merged:
                async for p, event in merged:
                    if isinstance(event, SequenceDelta):
                        choice = {
                            "index": p * n + event.index,
                            "text": event.text,
                            "logprobs": None,
                            "finish_reason": event.finish_reason,
                        }
                        yield chunk([choice])
                    else:
                        prompt_tokens += event.prompt_tokens
                        completion_tokens += event.completion_tokens
            if req.include_usage:
                yield chunk([], usage=_usage(prompt_tokens, completion_tokens))
        except Exception as exc:
            log.exception("completion stream failed")
            yield _sse({"error": {"message": str(exc), "type": "InternalServerError", "code": 500}})
        yield "data: [DONE]\n\n"

    # -- models and adapters ----------------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        cards = [
            {
                "id": self.served_model_name,
                "object": "model",
                "created": self.created,
                "owned_by": "openrft",
                "root": self.model_root,
                "parent": None,
                "max_model_len": self.engine.max_model_len,
            }
        ]
        for info in self.engine.adapters.infos():
            cards.append(
                {
                    "id": info.name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "openrft",
                    "root": str(info.path),
                    "parent": self.served_model_name,
                }
            )
        return {"object": "list", "data": cards}

    async def load_adapter(self, req: LoadLoraAdapterRequest) -> PlainTextResponse | JSONResponse:
        if not req.lora_name or not req.lora_path:
            return _error(400, "Both 'lora_name' and 'lora_path' must be provided.")
        try:
            # Reading and checking the weights is file I/O and tensor work: keep it off the event loop.
            adapters = self.engine.adapters
            load = adapters.replace if req.load_inplace else adapters.register
            await asyncio.to_thread(load, req.lora_name, req.lora_path)
        except AdapterExistsError as exc:
            return _error(400, f"{exc} If you want to load the adapter in place, set 'load_inplace' to True.")
        except AdapterFormatError as exc:
            if "No adapter found" in str(exc):
                return _error(
                    404, f"Loading lora {req.lora_name} failed: No adapter found for {req.lora_path}"
                )
            return _error(400, f"Loading lora {req.lora_name} failed: {exc}")
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    async def unload_adapter(self, req: UnloadLoraAdapterRequest) -> PlainTextResponse | JSONResponse:
        if not req.lora_name:
            return _error(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
        try:
            self.engine.adapters.unregister(req.lora_name)
        except AdapterUnknownError:
            return _error(404, f"The lora adapter '{req.lora_name}' cannot be found.")
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def create_app(server: EngineServer) -> FastAPI:
    app = FastAPI(title="OpenRFT CPU engine", docs_url=None, redoc_url=None)

    @app.exception_handler(EngineHTTPError)
    async def _engine_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EngineHTTPError)
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = str(first.get("msg", "Invalid request."))
        return _error(400, message.removeprefix("Value error, "), ".".join(loc) or None)

    @app.get("/health")
    async def health() -> PlainTextResponse:
        if not server.engine.alive:
            return PlainTextResponse("engine thread is not running", status_code=503)
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(server.models())

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> Any:
        return await server.chat(req)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Any:
        return await server.completions(req)

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(req: LoadLoraAdapterRequest) -> Any:
        return await server.load_adapter(req)

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(req: UnloadLoraAdapterRequest) -> Any:
        return await server.unload_adapter(req)

    return app


def build_server(args: argparse.Namespace) -> EngineServer:
    """Load the base model and start the engine thread (slow: seconds to minutes)."""
    import torch

    from serving.engine.engine import InferenceEngine
    from serving.engine.loader import load_base_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, root = load_base_model(
        args.base_model_source, dtype=args.dtype, cache_dir=args.cache_dir
    )
    engine = InferenceEngine(
        model,
        tokenizer,
        max_batch_size=args.max_batch_size,
        max_loras=args.max_loras,
        max_lora_rank=args.max_lora_rank,
        max_model_len=args.max_model_len,
        admission_window=args.admission_window,
    )
    engine.start()
    server = EngineServer(
        engine,
        served_model_name=args.served_model_name,
        model_root=root,
        reasoning_parser=None if args.reasoning_parser == "none" else args.reasoning_parser,
    )
    for spec in args.lora_modules or []:
        name, _, path = spec.partition("=")
        engine.adapters.register(name, path)
    return server


def watch_parent(pid: int, interval: float = 2.0) -> None:
    """Stop this server when the process that started it is gone (no orphaned engines after a crash)."""
    import signal
    import threading

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                log.warning("parent process %d is gone; shutting down", pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except PermissionError:  # exists, owned by someone else
                continue

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.cpu_server", description=__doc__.split("\n")[0])
    p.add_argument("--base-model-source", required=True, help="Local dir, HF id, or gguf:<package>/<file>.")
    p.add_argument("--served-model-name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--max-loras", type=int, default=4, help="Adapters resident at once (LRU beyond).")
    p.add_argument("--max-lora-rank", type=int, default=256)
    p.add_argument("--max-batch-size", type=int, default=16, help="Sequences decoded together.")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument(
        "--admission-window",
        type=float,
        default=0.02,
        help="Seconds to wait after an arrival so requests sent together are prefilled together.",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    p.add_argument("--cache-dir", default=None, help="Where converted (GGUF) base models are cached.")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    p.add_argument("--reasoning-parser", default="think", choices=["think", "none"])
    p.add_argument("--lora-modules", nargs="*", help="Adapters to load at start, as name=path.")
    p.add_argument("--log-level", default="info")
    p.add_argument("--parent-pid", type=int, default=None, help="Exit when this process is gone.")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.parent_pid:
        watch_parent(args.parent_pid)
    server = build_server(args)
    log.info("serving %s (%s) on %s:%d", args.served_model_name, server.model_root, args.host, args.port)
    try:
        uvicorn.run(
            create_app(server), host=args.host, port=args.port, log_level=args.log_level, access_log=False
        )
    finally:
        server.engine.shutdown()


if __name__ == "__main__":
    main()
