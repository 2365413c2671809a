"""The embedded CPU engine's HTTP server, split like vLLM's: :mod:`.protocol` (requests, errors, SSE
framing), :mod:`.serving` (the handlers), :mod:`.router` (the FastAPI app), ``__main__`` (the process:
``python -m serving.cpu_server``). Torch is loaded by the process, not by importing this package."""
