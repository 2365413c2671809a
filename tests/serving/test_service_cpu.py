"""The whole serving path on the real CPU engine process and the tiny model: gateway -> service ->
supervisor -> ``python -m serving.cpu_server``, driven with the ``openai`` SDK; then the engine is killed
and the supervisor brings it back."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serving.backends import CpuBackend
from serving.proxy import EngineProxy
from serving.registry import FineTunedRecord, ModelRegistry
from serving.service import ServingService
from serving.supervisor import EngineState, ServingSupervisor, SupervisorConfig
from tests.serving.helpers import ThreadedServer
from tests.support.gateway import create_gateway_app

FT = "ft:tiny:org-1:demo:ftjob-abc"
CKPT = FT + ":ckpt-step-2"
MESSAGES = [{"role": "user", "content": "What is 12 + 7?"}]


@pytest.fixture(scope="module")
def gateway(
    varied_model_dir: Path, adapter_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServingService]]:
    records = {
        FT: FineTunedRecord(FT, "tiny", adapter_dirs["all"]),
        CKPT: FineTunedRecord(CKPT, "tiny", adapter_dirs["qv"]),
    }
    supervisor = ServingSupervisor(
        SupervisorConfig(
            backend="cpu", log_dir=tmp_path_factory.mktemp("logs"), wait_for_ready=120, health_interval=0.5
        ),
        cpu_backend=CpuBackend(max_loras=2, max_batch_size=8, threads=1, startup_timeout=180),
    )
    service = ServingService(
        ModelRegistry({"tiny": str(varied_model_dir)}, records.get), supervisor, EngineProxy()
    )
    with ThreadedServer(create_gateway_app(service)) as server:
        yield server.url, service


def chat(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=10, temperature=0, **kwargs
    )  # type: ignore[arg-type]


@pytest.mark.slow
def test_fine_tuned_models_through_the_service_then_restart(gateway: tuple[str, ServingService]) -> None:
    url, service = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)

    base = chat(client, "tiny")  # starts the engine on first use (waits up to wait_for_ready)
    tuned = chat(client, FT)
    ckpt = chat(client, CKPT)
    assert tuned.model == FT and ckpt.model == CKPT and base.model == "tiny"
    texts = {
        base.choices[0].message.content,
        tuned.choices[0].message.content,
        ckpt.choices[0].message.content,
    }
    assert len(texts) == 3  # the fine-tuned adapter and the checkpoint change the greedy answer
    stream = client.chat.completions.create(
        model=FT, messages=MESSAGES, max_tokens=10, temperature=0, stream=True
    )  # type: ignore[arg-type]
    chunks = list(stream)
    assert {c.model for c in chunks} == {FT}
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == tuned.choices[0].message.content
    )

    with pytest.raises(openai.NotFoundError) as missing:
        chat(client, "ft:tiny:org-1:demo:ftjob-unknown")
    assert missing.value.code == "model_not_found"

    [status] = service.status()
    assert status["state"] == "ready" and status["backend"] == "cpu" and len(status["adapters"]) == 2

    os.killpg(status["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        [status] = service.status()
        if status["restarts"] == 1 and status["state"] == EngineState.READY.value:
            break
        time.sleep(0.5)
    assert status["restarts"] == 1 and status["state"] == "ready" and status["adapters"] == []
    assert chat(client, FT).choices[0].message.content == tuned.choices[0].message.content  # adapter reloaded

    no_model = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
