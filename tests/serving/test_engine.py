"""The CPU engine on the tiny model: heterogeneous LoRA batching, continuous batching, sampling options."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from serving.engine.adapters import AdapterUnknownError
from serving.engine.engine import RequestRejected
from serving.engine.sampling import SamplingParams
from tests.serving.conftest import build_engine
from tests.serving.helpers import collect, greedy

PROMPTS = [
    "The quick brown fox",
    "What is 12 + 7? Please solve the problem through step-by-step reasoning.",
    "yes",
    "Water boils at 100 degrees",
    "Step 1: read",
    "Answer: B.",
]
LORAS: list[str | None] = [None, "qv", "all", "qv", None, "all"]


def encode(engine: Any, text: str) -> list[int]:
    return list(engine.tokenizer(text)["input_ids"])


def test_mixed_adapter_batch_equals_each_request_alone(engine: Any) -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        alone = [
            await collect(engine, encode(engine, p), greedy(24), lora)
            for p, lora in zip(PROMPTS, LORAS, strict=True)
        ]
        together = await asyncio.gather(
            *(
                collect(engine, encode(engine, p), greedy(24), lora)
                for p, lora in zip(PROMPTS, LORAS, strict=True)
            )
        )
        return alone, list(together)

    mixed_before = engine.stats.mixed_adapter_steps
    alone, together = asyncio.run(main())
    for a, b in zip(alone, together, strict=True):
        assert a.tokens[0] == b.tokens[0]
        assert a.texts[0] == b.texts[0]
    # They really shared decode steps: batches held rows of different adapters (and base rows).
    assert engine.stats.mixed_adapter_steps > mixed_before
    assert engine.stats.max_running >= 4


def test_adapters_change_the_output_and_base_rows_are_untouched(engine: Any) -> None:
    ids = encode(engine, PROMPTS[0])

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(*(collect(engine, ids, greedy(16), lora) for lora in (None, "qv", "all")))
        )

    base, qv, all_ = asyncio.run(main())
    assert len({tuple(base.tokens[0]), tuple(qv.tokens[0]), tuple(all_.tokens[0])}) == 3
    base_alone = asyncio.run(collect(engine, ids, greedy(16)))
    assert base.tokens[0] == base_alone.tokens[0]


def test_engine_matches_transformers_and_peft_generate(
    engine: Any, varied_model_dir: Path, adapter_dirs: dict[str, Path]
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prompt = PROMPTS[1]
    ids = encode(engine, prompt)
    for lora in (None, "all", "qv"):
        reference = AutoModelForCausalLM.from_pretrained(varied_model_dir)
        if lora is not None:
            reference = PeftModel.from_pretrained(reference, adapter_dirs[lora])
        with torch.no_grad():
            out = reference.generate(
                torch.tensor([ids]),
                max_new_tokens=20,
                do_sample=False,
                eos_token_id=engine.tokenizer.eos_token_id,
            )
        expected = out[0, len(ids) :].tolist()
        got = asyncio.run(collect(engine, ids, greedy(20), lora))
        assert got.tokens[0] == expected, lora


def test_new_requests_join_a_running_batch(engine: Any) -> None:
    long_ids, short_ids = encode(engine, PROMPTS[1]), encode(engine, PROMPTS[3])

    async def main() -> tuple[Any, Any, list[str]]:
        order: list[str] = []
        started = asyncio.Event()

        async def long_request() -> Any:
            from serving.engine.engine import RequestDone

            tokens: list[int] = []
            async for event in engine.generate(long_ids, greedy(60, ignore_eos=True), "all"):
                if isinstance(event, RequestDone):
                    break
                tokens += event.token_ids
                started.set()
            order.append("long")
            return tokens

        async def short_request() -> Any:
            await started.wait()
            result = await collect(engine, short_ids, greedy(5, ignore_eos=True), "qv")
            order.append("short")
            return result

        long_tokens, short = await asyncio.gather(long_request(), short_request())
        return long_tokens, short, order

    long_tokens, short, order = asyncio.run(main())
    assert order == ["short", "long"]  # joined mid-flight and left before the long one finished
    assert long_tokens == asyncio.run(collect(engine, long_ids, greedy(60, ignore_eos=True), "all")).tokens[0]
    assert (
        short.tokens[0] == asyncio.run(collect(engine, short_ids, greedy(5, ignore_eos=True), "qv")).tokens[0]
    )


def test_stop_string_truncates_and_never_streams_it(engine: Any) -> None:
    ids = encode(engine, PROMPTS[0])
    full = asyncio.run(collect(engine, ids, greedy(30, ignore_eos=True)))
    text = full.texts[0]
    stop = text[8:11]
    assert len(stop) == 3 and stop not in text[:8]
    cut = asyncio.run(collect(engine, ids, greedy(30, ignore_eos=True, stop=(stop, "never-there"))))
    assert cut.texts[0] == text[: text.index(stop)]
    assert cut.finish[0] == "stop"
    assert all(stop not in d for d in cut.deltas[0])


def test_max_tokens_finish_reason_and_usage(engine: Any) -> None:
    ids = encode(engine, PROMPTS[2])
    got = asyncio.run(collect(engine, ids, greedy(5, ignore_eos=True)))
    assert got.finish[0] == "length"
    assert len(got.tokens[0]) == 5
    assert (got.prompt_tokens, got.completion_tokens) == (len(ids), 5)


def test_n_choices_are_seeded_and_independent(engine: Any) -> None:
    ids = encode(engine, PROMPTS[4])
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, n=3, seed=7, ignore_eos=True)
    first = asyncio.run(collect(engine, ids, params, "qv"))
    again = asyncio.run(collect(engine, ids, params, "qv"))
    assert sorted(first.tokens) == [0, 1, 2]
    assert first.tokens == again.tokens
    assert len({tuple(t) for t in first.tokens.values()}) > 1
    assert first.completion_tokens == 36 and first.prompt_tokens == len(ids)
    other_seed = asyncio.run(collect(engine, ids, SamplingParams(**{**params.__dict__, "seed": 8}), "qv"))
    assert other_seed.tokens != first.tokens


def test_closing_the_stream_cancels_the_request(engine: Any) -> None:
    ids = encode(engine, PROMPTS[1])

    async def main() -> None:
        stream = engine.generate(ids, greedy(500, ignore_eos=True))
        await stream.__anext__()
        await stream.aclose()
        for _ in range(200):
            if not engine._running:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the cancelled sequence is still running")

    asyncio.run(main())


def test_rejections(engine: Any) -> None:
    ids = encode(engine, PROMPTS[0])
    with pytest.raises(RequestRejected, match="maximum context length"):
        engine.validate(ids, greedy(engine.max_model_len), None)
    with pytest.raises(AdapterUnknownError):
        engine.validate(ids, greedy(4), "no-such-adapter")
    with pytest.raises(RequestRejected, match="empty"):
        engine.validate([], greedy(4), None)


def test_lru_eviction_keeps_outputs_right(
    engine: Any, varied_model_dir: Path, adapter_dirs: dict[str, Path]
) -> None:
    small = build_engine(varied_model_dir, max_batch_size=4, max_loras=1)
    try:
        for name, path in adapter_dirs.items():
            small.adapters.register(name, path)
        ids = encode(engine, PROMPTS[3])
        expected = {
            lora: asyncio.run(collect(engine, ids, greedy(10), lora)).tokens[0] for lora in ("qv", "all")
        }
        for lora in ("qv", "all", "qv"):
            assert asyncio.run(collect(small, ids, greedy(10), lora)).tokens[0] == expected[lora]
        assert (small.adapters.loads, small.adapters.evictions) == (3, 2)
        assert small.adapters.resident() == ["qv"]

        # One slot, two adapters at once: the second waits for the slot instead of evicting a running one.
        async def both() -> list[Any]:
            return list(
                await asyncio.gather(*(collect(small, ids, greedy(10), lora) for lora in ("all", "qv")))
            )

        a, q = asyncio.run(both())
        assert (a.tokens[0], q.tokens[0]) == (expected["all"], expected["qv"])
    finally:
        small.shutdown()


def test_unloading_a_running_adapter_lets_it_finish(engine: Any, adapter_dirs: dict[str, Path]) -> None:
    engine.adapters.register("temp", adapter_dirs["qv"])
    ids = encode(engine, PROMPTS[0])
    expected = asyncio.run(collect(engine, ids, greedy(20, ignore_eos=True), "qv")).tokens[0]

    async def main() -> Any:
        from serving.engine.engine import RequestDone

        tokens: list[int] = []
        async for event in engine.generate(ids, greedy(20, ignore_eos=True), "temp"):
            if isinstance(event, RequestDone):
                break
            if not tokens:
                engine.adapters.unregister("temp")
            tokens += event.token_ids
        return tokens

    assert asyncio.run(main()) == expected
    assert "temp" not in engine.adapters.resident()
    with pytest.raises(AdapterUnknownError):
        engine.validate(ids, greedy(4), "temp")


def test_requests_sent_together_share_one_prefill(engine: Any) -> None:
    ids = [encode(engine, p) for p in PROMPTS[:3]]

    async def main() -> None:
        async def staggered(i: int) -> Any:
            await asyncio.sleep(0.005 * i)  # a few ms apart, like clients behind a proxy
            return await collect(engine, ids[i], greedy(4, ignore_eos=True))

        await asyncio.gather(*(staggered(i) for i in range(3)))

    before = engine.stats.prefills
    asyncio.run(main())
    assert engine.stats.prefills == before + 1
