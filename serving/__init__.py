"""Serving fine-tuned models: inference engines behind one OpenAI-compatible HTTP protocol.

API side (torch-free, asyncio): :mod:`serving.service` (the facade routes use), :mod:`serving.registry`
(public model ids), :mod:`serving.supervisor` (one engine process per base model), :mod:`serving.proxy`
(forwarding, SSE relay), :mod:`serving.backends` / :mod:`serving.vllm_backend` (launch commands),
:mod:`serving.errors`. Engine side (torch): :mod:`serving.cpu_server` (protocol, serving, router, ``__main__``) and :mod:`serving.engine`.
"""
