"""Run an ASGI app with uvicorn in a background thread on a free port: real sockets, real streaming.

Used by the serving tests and the serving benchmark (the gateway and fake upstreams).
"""

from __future__ import annotations

from typing import Any, Literal


class ThreadedServer:
    """Run an ASGI app with uvicorn in a background thread on a free port (a real socket, real streaming)."""

    def __init__(self, app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto") -> None:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan)
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
        self.thread.join(timeout=60)
