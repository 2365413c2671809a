"""LoRA SFT with TRL's SFTTrainer on prompt/completion conversations (loss on the completion only)."""

from __future__ import annotations

import math
from typing import Any

from trainer.data import Row
from trainer.prompts import Messages


def supervised_examples(rows: list[Row]) -> list[dict[str, Any]]:
    """One example per assistant turn: the conversation before it is the prompt, the turn the completion.

    Every assistant turn of a multi-turn row is trained on, and always in the context it appears in.
    """
    out = []
    for row in rows:
        for i, m in enumerate(row.messages):
            if m.get("role") == "assistant" and i > 0:
                out.append(
                    {
                        "prompt": [dict(x) for x in row.messages[:i]],
                        "completion": [{"role": "assistant", "content": m.get("content") or ""}],
                    }
                )
    return out


def trace_example(prompt: Messages, response: str) -> dict[str, Any]:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": response}]}


def sft_steps(n_examples: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps HF Trainer will run (no gradient accumulation, last batch kept)."""
    return math.ceil(n_examples / batch_size) * epochs if n_examples else 0


def make_sft_trainer(
    *,
    model: Any,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    eval_examples: list[dict[str, Any]] | None,
    output_dir: str,
    batch_size: int,
    epochs: int,
    learning_rate: float,
    max_length: int,
    seed: int,
    use_cpu: bool,
    callbacks: list[Any],
    world_size: int = 1,
    strategy: dict[str, Any] | None = None,
) -> Any:
    """``batch_size`` is the global batch: under a launch of ``world_size`` ranks each takes its share
    (trainer.distributed.per_rank); ``strategy``: the TrainingArguments fields of the sharding strategy."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from trainer.device import detect, micro_batches
    from trainer.distributed import World, per_rank

    device = detect()
    local = (
        per_rank(batch_size, World(world_size=world_size), what="openrft.sft.batch_size")
        if world_size > 1
        else batch_size
    )
    micro, accum = micro_batches(local, tokens=max_length, config=model.config, device=device)
    args = SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accum,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=max_length,
        completion_only_loss=True,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=use_cpu,
        bf16=device.bf16,
        fp16=device.fp16,
        # On a GPU a 2048-token batch of a large model does not fit without it; on the CPU it only costs time.
        activation_checkpointing=device.kind == "cuda",
        disable_tqdm=True,
        dataset_num_proc=None,
        **(strategy or {}),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    _drop_printer(trainer)
    return trainer


def _drop_printer(trainer: Any) -> None:
    """With tqdm off, HF prints every log dict to stdout; the pipeline reports steps as events instead."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
