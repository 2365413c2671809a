"""Question augmentation (the paper's DA): paraphrased stems and shuffled, relabelled options.

The teacher (the policy or an endpoint) rewrites each question stem -- without its options -- into N variants
separated by ``<sep>``. A variant is kept only if it plausibly keeps the meaning: it differs from the original,
its length is comparable, it keeps every number of the original and adds none, and it does not try to answer.
For multiple-choice rows every variant also gets its own option order, drawn deterministically from the job
seed, and the item's answer field is relabelled, so the grader still accepts exactly the right option.
Augmented rows keep their source row's item fields; originals and variants train RL together (100 -> 600).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from trainer.checkpoints import atomic_write_text
from trainer.data import Choices, Row, answer_field, parse_choices, question, with_question
from trainer.teachers import make_teacher

if TYPE_CHECKING:
    from trainer.prompts import Messages
    from trainer.stages.context import RunContext

SEP = "<sep>"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LEADER = re.compile(r"^\s*(?:\d+[.):]|[-*]|(?:version|variant|rewrite|paraphrase)\s*\d*\s*[:.)-])\s*", re.I)


def paraphrase_prompt(stem: str, n: int) -> Messages:
    """The paper's instruction in substance: keep the meaning, add nothing, separate variants with <sep>."""
    return [
        {
            "role": "user",
            "content": (
                f"Rewrite the question below in {n} different ways. Keep its meaning exactly: do not add or "
                "remove any information, keep every number and name, and do not answer it. You may restructure "
                f"the sentences. Write only the {n} rewritten questions, separated by {SEP}.\n\n"
                f"Question:\n{stem}"
            ),
        }
    ]


def keeps_meaning(original: str, variant: str) -> bool:
    """Cheap checks that a paraphrase did not change the question (numbers are the usual casualty)."""
    v = variant.strip()
    if not v or " ".join(v.lower().split()) == " ".join(original.lower().split()):
        return False
    if not 0.5 <= len(v) / max(1, len(original)) <= 2.0:
        return False
    if Counter(_NUMBER.findall(v)) != Counter(_NUMBER.findall(original)):
        return False
    # A rewrite must not carry options or an answer of its own.
    return parse_choices(v) is None and not re.search(r"\b(the )?(correct )?answer is\b|\\boxed", v, re.I)


def parse_variants(text: str, original: str, n: int) -> list[str]:
    """The distinct acceptable variants in a teacher's reply (at most ``n``)."""
    parts = text.split(SEP) if SEP in text else re.split(r"\n\s*\n", text)
    out: list[str] = []
    for part in parts:
        v = _LEADER.sub("", part.strip()).strip().strip('"').strip()
        if keeps_meaning(original, v) and v not in out:
            out.append(v)
    return out[:n]


def shuffled(choices: Choices, answer: str, rng: random.Random) -> tuple[list[int], str]:
    """A new option order (indices into the original options) and the answer's new label."""
    order = list(range(len(choices.texts)))
    rng.shuffle(order)
    old = choices.labels.index(answer)
    return order, choices.labels[order.index(old)]


def _relabel_item(item: dict[str, Any], field: str, new_label: str, order: list[int]) -> dict[str, Any]:
    out = json.loads(json.dumps(item))
    out[field] = new_label
    # Structured options next to the prompt (e.g. SciKnowEval's {"text": [...], "label": [...]}) follow too.
    ch = out.get("choices")
    if isinstance(ch, dict) and isinstance(ch.get("text"), list) and len(ch["text"]) == len(order):
        ch["text"] = [ch["text"][i] for i in order]
    elif isinstance(ch, list) and len(ch) == len(order) and all(isinstance(c, str) for c in ch):
        out["choices"] = [ch[i] for i in order]
    return out


def augment_row(
    row: Row, variants: list[str], *, n_variants: int, shuffle: bool, seed: int, first_index: int
) -> list[Row]:
    """Up to ``n_variants`` rows derived from ``row``: paraphrased stems and/or shuffled options."""
    q = question(row)
    choices = parse_choices(q)
    field = answer_field(row.item, choices.labels, preferred=None) if choices else None
    out: list[Row] = []
    for v in range(n_variants):
        stem = variants[v] if v < len(variants) else None
        item = row.item
        if choices is not None:
            order = list(range(len(choices.texts)))
            if shuffle and field is not None:
                rng = random.Random(f"{seed}:{row.uid}:{v}")
                order, new_label = shuffled(choices, str(row.item[field]).strip(), rng)
                item = _relabel_item(row.item, field, new_label, order)
            if stem is None and order == list(range(len(choices.texts))):
                continue  # nothing would differ from the original
            text = choices.render(stem=stem if stem is not None else choices.stem, order=order)
        elif stem is not None:
            text = stem
        else:
            continue
        out.append(
            Row(
                index=first_index + len(out),
                messages=with_question(row, text),
                item=item,
                tools=row.tools,
                source_index=row.index,
                meta={"uid": f"{row.uid}.{v + 1}", "split": "train", "augmented": True},
            )
        )
    return out


def augment_rows(ctx: RunContext) -> list[Row]:
    """Augmented rows for RL (computed once per job, then reloaded from the run state)."""
    path = ctx.store.artifact("augmented.jsonl")
    if "augment" in ctx.state.done and path.is_file():
        return [_row_from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    cfg = ctx.options.augmentation
    rows = ctx.train_rows
    stems = []
    for r in rows:
        ch = parse_choices(question(r))
        stems.append(ch.stem if ch else question(r))
    variants: list[list[str]] = [[] for _ in rows]
    if cfg.paraphrase:
        teacher = make_teacher(
            cfg.teacher,
            model=ctx.base_model,
            tokenizer=ctx.tokenizer,
            stopper=ctx.stopper,
            allowed_hosts=ctx.private_url_hosts,
        )
        ctx.sink.message(
            f"Augmentation: asking {teacher.name} for {cfg.n_variants} paraphrases per question."
        )
        replies = teacher.sample(
            [paraphrase_prompt(s, cfg.n_variants) for s in stems],
            n=1,
            temperature=0.7,
            max_new_tokens=cfg.max_new_tokens,
        )
        variants = [
            parse_variants(r[0] if r else "", s, cfg.n_variants) for r, s in zip(replies, stems, strict=True)
        ]
    out: list[Row] = []
    for r, vs in zip(rows, variants, strict=True):
        out += augment_row(
            r,
            vs,
            n_variants=cfg.n_variants,
            shuffle=cfg.shuffle_options,
            seed=ctx.spec.seed,
            first_index=len(rows) + len(out),
        )
    atomic_write_text(path, "".join(json.dumps(_row_to_json(r)) + "\n" for r in out))
    kept = sum(len(v) for v in variants)
    counts = {"paraphrases_kept": kept, "paraphrases_asked": len(rows) * cfg.n_variants * int(cfg.paraphrase)}
    counts["rows_added"] = len(out)
    ctx.state.counters["augmentation"] = counts
    ctx.sink.message(
        f"Augmentation: {len(rows)} questions -> {len(rows) + len(out)} RL rows "
        f"({kept} paraphrases passed the meaning checks, options shuffled: {cfg.shuffle_options})."
    )
    ctx.mark_done("augment")
    return out


def _row_to_json(r: Row) -> dict[str, Any]:
    return {
        "index": r.index,
        "messages": r.messages,
        "item": r.item,
        "tools": r.tools,
        "source_index": r.source_index,
        "meta": r.meta,
    }


def _row_from_json(d: dict[str, Any]) -> Row:
    return Row(
        index=d["index"],
        messages=d["messages"],
        item=d["item"],
        tools=d.get("tools"),
        source_index=d["source_index"],
        meta=d["meta"],
    )
