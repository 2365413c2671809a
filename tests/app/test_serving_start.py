"""The API's serving layer under a burst of first requests: one service, one engine per model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.conftest import make_key
from tests.serving.test_supervisor import CountingBackend, supervisor_with
from tests.support.http_thread import ThreadedServer


def test_a_burst_of_first_calls_starts_one_engine(
    app_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after a restart, a grader batch sends its calls at once: the serving layer is built on the
    first of them, and exactly one engine process is started for the model; every call is answered by it."""
    import app.inference
    from app.main import create_app
    from serving.proxy import EngineProxy
    from serving.registry import ModelRegistry
    from serving.service import ServingService

    backend = CountingBackend(startup_delay=0.5)
    built: list[ServingService] = []

    def build(settings: Any) -> ServingService:
        time.sleep(0.3)  # a real build reads settings and storage: long enough for the burst to meet here
        service = ServingService(
            ModelRegistry({"tiny-test": "src"}, lambda mid: None),
            supervisor_with(backend, tmp_path, wait_for_ready=30),
            EngineProxy(),
        )
        built.append(service)
        return service

    monkeypatch.setattr(app.inference, "build_serving", build)
    headers = {"Authorization": f"Bearer {make_key()}"}
    body = {"model": "tiny-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(
                *(http.post(url + "/v1/chat/completions", json=body, headers=headers) for _ in range(8))
            )

    with ThreadedServer(create_app()) as server:
        answers = asyncio.run(burst(server.url))
    assert [r.status_code for r in answers] == [200] * 8, answers[0].text
    assert len(built) == 1 and backend.launches == ["tiny-test"]
