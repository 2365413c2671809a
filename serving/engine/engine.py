"""The embedded CPU inference engine: one base model, many LoRA adapters, continuous batching.

A single scheduler thread owns the model. Between decode steps it admits waiting requests (prefilled
together, left-padded), merges them into the running batch, runs one decode step for every running
sequence, whatever adapter each uses, samples per row, streams text deltas back to the asyncio side, and
retires finished sequences. Requests reach it through :meth:`InferenceEngine.generate`, an async iterator.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from serving.engine.adapters import AdapterSlots, AdapterUnknownError
from serving.engine.kv import PaddedBatch, check_supported
from serving.engine.lora import LoraBatch, wrap_linear_modules
from serving.engine.sampling import SamplingParams, apply_penalties, sample_token
from serving.engine.structured import Constrainer, GrammarError
from serving.engine.text import IncrementalDetokenizer, StopStringTracker

log = logging.getLogger("openrft.serving.engine")


class RequestRejected(ValueError):
    """The request cannot run on this engine (too long, bad parameters); a 400 for the client."""


@dataclass
class SequenceDelta:
    """New output of one sequence (choice ``index``); ``finish_reason`` is set on its last delta."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class RequestDone:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Failed:
    error: BaseException


Event = SequenceDelta | RequestDone


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    lora_name: str | None
    emit: Callable[[SequenceDelta | RequestDone | _Failed], None]
    cancelled: bool = False
    slot: int = 0
    pending: int = 0  # sequences not finished yet
    completion_tokens: int = 0
    arrived: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Sequence:
    request: _Request
    index: int
    next_position: int
    detokenizer: IncrementalDetokenizer
    stops: StopStringTracker
    generator: torch.Generator | None
    matcher: Any = None
    """The llguidance matcher of a structured-output request: what may come next."""
    generated: list[int] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class EngineStats:
    steps: int = 0
    prefills: int = 0
    generated_tokens: int = 0
    max_running: int = 0
    mixed_adapter_steps: int = 0
    """Decode steps whose batch held rows of two or more different adapters (base counts as one)."""


def default_target_modules(model: nn.Module) -> set[str]:
    """The names of all ``nn.Linear`` children inside the decoder (everything but the LM head)."""
    names = set()
    getter = getattr(model, "get_output_embeddings", None)
    output = getter() if callable(getter) else None
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear) and child is not output:
                names.add(child_name)
    return names


class InferenceEngine:
    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        max_batch_size: int = 16,
        max_loras: int = 4,
        max_lora_rank: int = 64,
        target_modules: set[str] | None = None,
        max_model_len: int | None = None,
        prefill_token_budget: int = 4096,
        admission_window: float = 0.02,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.prefill_token_budget = prefill_token_budget
        self.admission_window = admission_window
        config = getattr(model, "config", None)
        context: int = max_model_len or getattr(config, "max_position_embeddings", None) or 2048
        self.max_model_len = int(context)
        self.dtype = next(model.parameters()).dtype
        self._lora_batch = LoraBatch()
        targets = target_modules or default_target_modules(model)
        wrappers = wrap_linear_modules(model, targets, self._lora_batch, max_loras + 1, max_lora_rank)
        self.adapters = AdapterSlots(wrappers, max_loras=max_loras, max_rank=max_lora_rank, dtype=self.dtype)
        self.eos_ids = self._eos_ids()
        vocab = int(getattr(config, "vocab_size", 0) or len(tokenizer))
        self.constrainer = Constrainer(tokenizer, vocab)
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.stats = EngineStats()
        self._inbox: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._waiting: deque[_Request] = deque()
        self._running: list[_Sequence] = []
        self._batch: PaddedBatch | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._ids = itertools.count()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._warmup()
        self._thread = threading.Thread(target=self._loop, name="inference-engine", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stopping = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), getattr(self.model, "config", None)):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        tokenizer_eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(tokenizer_eos, int):
            ids.add(tokenizer_eos)
        return frozenset(ids)

    def _warmup(self) -> None:
        with torch.inference_mode():
            cache = self._new_cache()
            ids = torch.tensor([[self.tokenizer.eos_token_id or 0]], dtype=torch.long)
            self._forward(ids, torch.ones_like(ids), torch.zeros_like(ids), cache, [0])
            check_supported(cache)

    # -- public API (event loop side) ------------------------------------------------------------------
    def validate(self, prompt_ids: list[int], params: SamplingParams, lora_name: str | None) -> None:
        if not prompt_ids:
            raise RequestRejected("The prompt is empty.")
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise RequestRejected(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(prompt_ids) + params.max_tokens} tokens ({len(prompt_ids)} in the messages, "
                f"{params.max_tokens} in the completion). Please reduce the length of the messages or completion."
            )
        if params.n > self.max_batch_size:
            raise RequestRejected(
                f"n={params.n} is larger than this engine's batch size {self.max_batch_size}."
            )
        if lora_name is not None and not self.adapters.is_registered(lora_name):
            raise AdapterUnknownError(f"The model `{lora_name}` does not exist.")
        if params.grammar is not None:
            try:
                self.constrainer.check(params.grammar)
            except GrammarError as exc:
                raise RequestRejected(str(exc)) from exc

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, lora_name: str | None = None
    ) -> AsyncIterator[Event]:
        """Stream :class:`SequenceDelta` events, then one :class:`RequestDone`. Closing it cancels the request."""
        self.validate(prompt_ids, params, lora_name)
        if not self.alive:
            raise RuntimeError("The inference engine is not running.")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[SequenceDelta | RequestDone | _Failed] = asyncio.Queue()

        def emit(event: SequenceDelta | RequestDone | _Failed) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        request = _Request(f"req-{next(self._ids)}", list(prompt_ids), params, lora_name, emit)
        self._inbox.put(request)
        done = False
        try:
            while True:
                event = await events.get()
                if isinstance(event, _Failed):
                    done = True
                    raise event.error
                yield event
                if isinstance(event, RequestDone):
                    done = True
                    return
        finally:
            if not done:
                request.cancelled = True
                self._inbox.put(None)  # wake the scheduler so it drops the request now

    # -- scheduler thread --------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stopping:
            self._drain_inbox(block=not self._running and not self._waiting)
            self._gather_arrivals()
            if self._stopping:
                break
            self._drop_cancelled()
            admitted = self._admit()
            try:
                with torch.inference_mode():
                    if admitted:
                        self._prefill(admitted)
                    if self._running:
                        self._decode_step()
            except Exception as exc:
                log.exception("engine step failed; failing the requests of this batch")
                failed = {s.request for s in self._running} | set(admitted)
                self._running, self._batch = [], None
                for request in failed:
                    self._finish_request(request, error=exc)
        for request in [*{s.request for s in self._running}, *self._waiting]:
            self._finish_request(request, error=RuntimeError("The inference engine shut down."))

    def _gather_arrivals(self) -> None:
        """Wait out a short window after the newest arrival, so requests sent together share one prefill.

        Clients that fire at once reach the engine a few milliseconds apart (more through a proxy); without
        the window the first would be prefilled alone and the rest would wait a whole step. Like Triton's
        ``max_queue_delay``; the window is tiny next to a CPU decode step.
        """
        if not self._waiting or self.admission_window <= 0:
            return
        give_up = time.monotonic() + 5 * self.admission_window  # a steady stream must not stall the batch
        while True:
            newest = max(r.arrived for r in self._waiting)
            left = min(newest + self.admission_window, give_up) - time.monotonic()
            if left <= 0:
                return
            time.sleep(left)
            before = len(self._waiting)
            self._drain_inbox(block=False)
            if len(self._waiting) == before:
                return

    def _drain_inbox(self, *, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=1.0) if block else self._inbox.get_nowait()
            while True:
                if item is not None:
                    self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return

    def _drop_cancelled(self) -> None:
        if any(r.cancelled for r in self._waiting):
            self._waiting = deque(r for r in self._waiting if not r.cancelled)
        if any(s.request.cancelled for s in self._running):
            for seq in self._running:
                if seq.request.cancelled:
                    seq.finish_reason = "abort"
            self._retire()

    def _admit(self) -> list[_Request]:
        seats = self.max_batch_size - len(self._running)
        budget = self.prefill_token_budget
        admitted: list[_Request] = []
        skipped: deque[_Request] = deque()
        while self._waiting and seats > 0:
            request = self._waiting.popleft()
            cost = len(request.prompt_ids)
            if request.params.n > seats or (admitted and cost > budget):
                skipped.append(request)
                break
            if request.lora_name is not None:
                try:
                    slot = self.adapters.acquire(request.lora_name)
                except Exception as exc:
                    self._finish_request(request, error=exc, release=False)
                    continue
                if slot is None:  # every slot is pinned by running adapters: wait, let others pass
                    skipped.append(request)
                    continue
                request.slot = slot
            admitted.append(request)
            seats -= request.params.n
            budget -= cost
        self._waiting.extendleft(reversed(skipped))
        return admitted

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=getattr(self.model, "config", None))

    def _forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        slots: list[int],
    ) -> torch.Tensor:
        self._lora_batch.set(slots)
        try:
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kwarg: cache},
            )
        finally:
            self._lora_batch.clear()
        return out.logits[:, -1, :]

    def _prefill(self, requests: list[_Request]) -> None:
        width = max(len(r.prompt_ids) for r in requests)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(requests), width), pad, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            mask[row, width - len(request.prompt_ids) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = self._new_cache()
        logits = self._forward(ids, mask, positions, cache, [r.slot for r in requests])
        self.stats.prefills += 1
        # n > 1: every choice continues from a copy of its prompt's cache row.
        rows = [row for row, r in enumerate(requests) for _ in range(r.params.n)]
        batch = PaddedBatch(cache, mask)
        if len(rows) != len(requests):
            batch.select(rows)
            logits = logits[rows]
        new: list[_Sequence] = []
        for request in requests:
            request.pending = request.params.n
            for index in range(request.params.n):
                new.append(self._new_sequence(request, index))
        if self._batch is None:
            self._batch = batch
        else:
            self._batch.extend(batch)
        self._running.extend(new)
        for seq, row_logits in zip(new, logits, strict=True):
            self._advance(seq, row_logits)
        self._retire()

    def _new_sequence(self, request: _Request, index: int) -> _Sequence:
        generator = None
        if not request.params.greedy:
            seed = request.params.seed if request.params.seed is not None else secrets.randbits(63)
            generator = torch.Generator().manual_seed(seed + index)
        return _Sequence(
            request=request,
            index=index,
            next_position=len(request.prompt_ids),
            detokenizer=IncrementalDetokenizer(self.tokenizer, request.prompt_ids),
            stops=StopStringTracker(request.params.stop),
            generator=generator,
            matcher=self.constrainer.matcher(request.params.grammar) if request.params.grammar else None,
        )

    def _decode_step(self) -> None:
        assert self._batch is not None
        ids = torch.tensor([[seq.generated[-1]] for seq in self._running], dtype=torch.long)
        positions = torch.tensor([[seq.next_position - 1] for seq in self._running], dtype=torch.long)
        mask = self._batch.append_step()
        slots = [seq.request.slot for seq in self._running]
        logits = self._forward(ids, mask, positions, self._batch.cache, slots)
        self.stats.steps += 1
        self.stats.max_running = max(self.stats.max_running, len(self._running))
        if len(set(slots)) > 1:
            self.stats.mixed_adapter_steps += 1
        for seq, row_logits in zip(self._running, logits, strict=True):
            self._advance(seq, row_logits)
        self._retire()

    def _advance(self, seq: _Sequence, logits: torch.Tensor) -> None:
        """Sample the next token of ``seq`` and emit what it adds to the text."""
        params = seq.request.params
        logits = apply_penalties(logits, seq.generated, params.presence_penalty, params.frequency_penalty)
        if seq.matcher is not None:
            logits = self.constrainer.mask(seq.matcher, logits)
            if not torch.isfinite(logits).any():  # the grammar allows nothing more (cannot happen unstopped)
                seq.finish_reason = "stop"
                seq.request.emit(SequenceDelta(seq.index, seq.stops.flush(), seq.unsent, "stop"))
                seq.unsent = []
                return
        token = sample_token(logits, params, seq.generator)
        if seq.matcher is not None:
            seq.matcher.consume_token(token)
        seq.generated.append(token)
        seq.unsent.append(token)
        seq.next_position += 1
        self.stats.generated_tokens += 1
        text = ""
        if (token in self.eos_ids and not params.ignore_eos) or token in params.stop_token_ids:
            seq.finish_reason = "stop"
        else:
            text = seq.stops.add(seq.detokenizer.add(token))
            if seq.stops.stopped or (seq.matcher is not None and seq.matcher.is_stopped()):
                seq.finish_reason = "stop"
            elif len(seq.generated) >= params.max_tokens or seq.next_position >= self.max_model_len:
                seq.finish_reason = "length"
        if seq.finish_reason is not None:
            text += seq.stops.flush()
        if text or seq.finish_reason is not None:
            seq.request.emit(SequenceDelta(seq.index, text, seq.unsent, seq.finish_reason))
            seq.unsent = []

    def _retire(self) -> None:
        if all(seq.finish_reason is None for seq in self._running):
            return
        keep = [i for i, seq in enumerate(self._running) if seq.finish_reason is None]
        for seq in self._running:
            if seq.finish_reason is None:
                continue
            request = seq.request
            request.completion_tokens += len(seq.generated)
            request.pending -= 1
            if request.pending == 0:
                self._finish_request(request)
        self._running = [self._running[i] for i in keep]
        if not self._running:
            self._batch = None
        elif self._batch is not None:
            self._batch.select(keep)

    def _finish_request(
        self, request: _Request, *, error: BaseException | None = None, release: bool = True
    ) -> None:
        if release and request.lora_name is not None and request.slot:
            self.adapters.release(request.lora_name)
            request.slot = 0
        if request.cancelled:
            return
        try:
            if error is not None:
                request.emit(_Failed(error))
            else:
                request.emit(RequestDone(len(request.prompt_ids), request.completion_tokens))
        except RuntimeError:  # the caller's event loop is gone
            pass
