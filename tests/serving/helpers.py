"""Small helpers shared by the serving tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Collected:
    texts: dict[int, str] = field(default_factory=dict)
    tokens: dict[int, list[int]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    deltas: dict[int, list[str]] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def collect(engine: Any, prompt_ids: list[int], params: Any, lora: str | None = None) -> Collected:
    from serving.engine.engine import RequestDone

    out = Collected()
    async for event in engine.generate(prompt_ids, params, lora):
        if isinstance(event, RequestDone):
            out.prompt_tokens, out.completion_tokens = event.prompt_tokens, event.completion_tokens
            continue
        out.texts[event.index] = out.texts.get(event.index, "") + event.text
        out.tokens.setdefault(event.index, []).extend(event.token_ids)
        out.deltas.setdefault(event.index, []).append(event.text)
        if event.finish_reason is not None:
            out.finish[event.index] = event.finish_reason
    return out


def greedy(max_tokens: int, **kwargs: Any) -> Any:
    from serving.engine.sampling import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kwargs)


class ThreadedServer:
    """Run an ASGI app with uvicorn in a background thread on a free port (a real socket, real streaming)."""

    def __init__(self, app: Any) -> None:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self.thread: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
