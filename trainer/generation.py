"""Batched chat generation with transformers (CPU path and everything outside GRPO's own rollouts)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from trainer.control import Stopper

Messages = list[dict[str, Any]]


@dataclass
class GenerationStats:
    seconds: float = 0.0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    calls: int = 0
    truncated: int = 0
    per_call: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The exact prompt string every stage uses for a conversation (generation prompt appended)."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[Messages],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    num_samples: int = 1,
    batch_size: int = 16,
    stopper: Stopper | None = None,
    stats: GenerationStats | None = None,
    top_p: float = 1.0,
    synced_gpus: bool = False,
    counted: int | None = None,
) -> list[list[str]]:
    """``num_samples`` completions for each conversation (greedy when ``temperature`` is 0).

    ``synced_gpus``: the weights are sharded over the ranks (ZeRO-3, FSDP), so every forward is a collective:
    each rank keeps stepping until all ranks' batches are done (the ranks must also make as many calls).
    ``counted``: only the first ``counted`` conversations count in ``stats`` (the rest pad a rank's share)."""
    import torch

    was_training = model.training
    model.eval()
    pad_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    eos = _eos_ids(model, tokenizer)
    out: list[list[str]] = [[] for _ in conversations]
    flat = [(i, chat_prompt(tokenizer, c)) for i, c in enumerate(conversations) for _ in range(num_samples)]
    criteria = [stopper.stopping_criteria()] if stopper else []
    try:
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            enc = tokenizer(
                [p for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                seqs = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=top_p if temperature > 0 else None,
                    top_k=None,
                    eos_token_id=eos,
                    pad_token_id=tokenizer.pad_token_id,
                    stopping_criteria=criteria or None,
                    **({"synced_gpus": True} if synced_gpus else {}),
                )
            dt = time.perf_counter() - t0
            new = seqs[:, enc["input_ids"].shape[1] :]
            for (i, _), ids in zip(chunk, new, strict=True):
                ids = ids.tolist()
                n = _length(ids, eos, tokenizer.pad_token_id)
                if stats is not None and (counted is None or i < counted):
                    stats.completion_tokens += n
                    stats.truncated += int(n >= max_new_tokens and not (set(ids[:n]) & set(eos)))
                out[i].append(str(tokenizer.decode(ids[:n], skip_special_tokens=True)))
            if stats is not None:
                stats.seconds += dt
                stats.calls += 1
                stats.prompt_tokens += int(enc["attention_mask"].sum())
                stats.per_call.append(dt)
    finally:
        tokenizer.padding_side = pad_side
        model.train(was_training)
    return out


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _length(ids: list[int], eos: list[int], pad: int | None) -> int:
    """Tokens up to and including the first EOS (padding after it does not count)."""
    for n, t in enumerate(ids):
        if t in eos:
            return n + 1
    while ids and pad is not None and ids[-1] == pad and pad not in eos:
        ids = ids[:-1]
    return len(ids)
