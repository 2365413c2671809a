"""The LoRA adapter every stage trains (one adapter, carried from SFT into RL)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


def lora_config(rank: int, alpha: int, dropout: float) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def attach_adapter(
    base: PreTrainedModel, *, rank: int, alpha: int, dropout: float, adapter_dir: Path | None = None
) -> PeftModel:
    """A trainable PEFT model: a fresh LoRA, or the adapter saved in ``adapter_dir`` (e.g. after SFT)."""
    from peft import PeftModel, get_peft_model

    if adapter_dir is not None:
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    return get_peft_model(base, lora_config(rank, alpha, dropout))


def trainable_fingerprint(model: Any) -> float:
    """A cheap summary of the trainable (LoRA) weights, to tell which update a rollout was sampled from."""
    import torch

    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for i, p in enumerate(p for p in model.parameters() if p.requires_grad):
            # Position-weighted so that swapping two tensors changes the result.
            total += (i + 1) * p.detach().double().sum().cpu() + p.detach().double().abs().sum().cpu()
    return float(total)


def merge_and_save(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Write full weights with the adapter merged in (loadable without PEFT)."""
    import copy

    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
