"""The CPU engine's OpenAI-compatible handlers around one :class:`InferenceEngine`: chat and text completions
(plain and SSE, one streaming path for both), models, runtime LoRA adapters."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from serving.cpu_server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EngineHTTPError,
    LoadLoraAdapterRequest,
    UnloadLoraAdapterRequest,
    error_response,
    message_text,
    sse,
    sse_error,
    usage_of,
)
from serving.engine.adapters import AdapterExistsError, AdapterUnknownError
from serving.engine.engine import Event, InferenceEngine, RequestDone, RequestRejected, SequenceDelta
from serving.engine.lora import AdapterFormatError
from serving.engine.reasoning import THINK_START, ReasoningSplitter, split_reasoning
from serving.engine.sampling import SamplingParams
from serving.engine.structured import GrammarError, grammar_for

log = logging.getLogger("openrft.serving.cpu_server")


def event_stream(chunks: AsyncGenerator[str, None], what: str) -> StreamingResponse:
    """The one SSE path of chat and text completions: an error once the stream has started (an
    EngineHTTPError included) is one error event, and every stream ends with ``[DONE]``."""

    async def frames() -> AsyncIterator[str]:
        try:
            async with aclosing(chunks) as inner:  # a client gone closes the response: abort the requests too
                async for frame in inner:
                    yield frame
        except Exception as exc:
            if not isinstance(exc, EngineHTTPError):
                log.exception("%s stream failed", what)
            yield sse_error(exc)
        yield "data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


def _chunk_writer(obj: str, rid: str, created: int, model: str) -> Callable[..., str]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return sse({"id": rid, "object": obj, "created": created, "model": model, "choices": choices} | extra)

    return chunk


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
            grammar = grammar_for(getattr(req, "response_format", None))
        except GrammarError as exc:
            raise EngineHTTPError(400, str(exc), param="response_format") from exc
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
                grammar=grammar,
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
            param = "response_format" if params.grammar and "response_format" in str(exc) else None
            raise EngineHTTPError(400, str(exc), param=param) from exc
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
                    "content": message_text(message.get("content")),
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
        # Constrained output is the answer itself, never a reasoning section a template opened.
        in_reasoning = self.reasoning and not params.grammar and prompt.rstrip().endswith(THINK_START)
        model = req.model or self.served_model_name
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            return event_stream(
                self._chat_stream(events, req, params.n, model, rid, created, in_reasoning), "chat"
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
                    usage = usage_of(event.prompt_tokens, event.completion_tokens)
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
    ) -> AsyncGenerator[str, None]:
        chunk = _chunk_writer("chat.completion.chunk", rid, created, model)

        def delta_choice(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

        splitters = [ReasoningSplitter(starts_in_reasoning=in_reasoning) for _ in range(n)]
        for i in range(n):
            yield chunk([delta_choice(i, {"role": "assistant", "content": ""})])
        async with aclosing(events) as stream:  # type: ignore[type-var]
            async for event in stream:
                if isinstance(event, RequestDone):
                    if req.include_usage:
                        yield chunk([], usage=usage_of(event.prompt_tokens, event.completion_tokens))
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
            return event_stream(
                self._completion_stream(streams, req, prompt_texts, model, rid, created), "completion"
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
            "usage": usage_of(prompt_tokens, completion_tokens),
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
    ) -> AsyncGenerator[str, None]:
        chunk = _chunk_writer("text_completion", rid, created, model)
        n = req.n
        prompt_tokens = completion_tokens = 0
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
            yield chunk([], usage=usage_of(prompt_tokens, completion_tokens))

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
            return error_response(400, "Both 'lora_name' and 'lora_path' must be provided.")
        try:
            # Reading and checking the weights is file I/O and tensor work: keep it off the event loop.
            adapters = self.engine.adapters
            load = adapters.replace if req.load_inplace else adapters.register
            await asyncio.to_thread(load, req.lora_name, req.lora_path)
        except AdapterExistsError as exc:
            return error_response(
                400, f"{exc} If you want to load the adapter in place, set 'load_inplace' to True."
            )
        except AdapterFormatError as exc:
            if "No adapter found" in str(exc):
                return error_response(
                    404, f"Loading lora {req.lora_name} failed: No adapter found for {req.lora_path}"
                )
            return error_response(400, f"Loading lora {req.lora_name} failed: {exc}")
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    async def unload_adapter(self, req: UnloadLoraAdapterRequest) -> PlainTextResponse | JSONResponse:
        if not req.lora_name:
            return error_response(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
        try:
            self.engine.adapters.unregister(req.lora_name)
        except AdapterUnknownError:
            return error_response(404, f"The lora adapter '{req.lora_name}' cannot be found.")
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")
