"""The embedded CPU engine as a process speaking vLLM's OpenAI-compatible HTTP protocol.

python -m serving.cpu_server --base-model-source SRC --served-model-name NAME --port P
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from serving.backends import ENGINE_KEY_ENV
from serving.cpu_server.router import create_app
from serving.cpu_server.serving import EngineServer

log = logging.getLogger("openrft.serving.cpu_server")


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
    p = argparse.ArgumentParser(
        prog="python -m serving.cpu_server", description=(__doc__ or "").split("\n")[0]
    )
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
            create_app(server, api_key=os.environ.get(ENGINE_KEY_ENV)),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
        )
    finally:
        server.engine.shutdown()


if __name__ == "__main__":
    main()
