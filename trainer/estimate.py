"""Duration estimate at job start, from the settings and a timed calibration step on this machine.

The calibration generates a short batch with the base model (tokens per second at the RL batch shape) and
runs one forward/backward pass (seconds per trained sequence); the plan's work is then priced with both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from trainer.config import RunPlan


@dataclass
class Calibration:
    gen_tokens_per_s: float
    train_s_per_seq: float
    seconds: float
    completion_tokens_mean: float | None = None
    """Tokens the base model actually wrote per sequence before stopping (at most the calibration's budget)."""


def calibrate(
    model: Any, tokenizer: Any, prompt: list[dict[str, Any]], *, batch: int, new_tokens: int
) -> Calibration:
    from trainer.generation import GenerationStats, chat_prompt, generate

    t0 = time.perf_counter()
    # The first call pays one-off costs (allocator, kernels, caches): keep them out of the rate.
    generate(model, tokenizer, [prompt], max_new_tokens=2, temperature=1.0, num_samples=batch)
    stats = GenerationStats()
    # Sampling with min_new_tokens is not needed: a random-ish prompt at temperature 1 rarely stops early, and
    # the stats count the tokens actually produced.
    generate(
        model, tokenizer, [prompt], max_new_tokens=new_tokens, temperature=1.0, num_samples=batch, stats=stats
    )
    tps = stats.tokens_per_second or 1.0
    text = chat_prompt(tokenizer, prompt) + "x " * new_tokens
    enc = tokenizer([text] * batch, return_tensors="pt", add_special_tokens=False).to(
        next(model.parameters()).device
    )
    # LoRA training backpropagates through every layer but computes no base-weight gradients: freeze the
    # weights and let the gradient start at the embeddings to time the same work.
    was = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_(True))
    model.train()
    try:
        t1 = time.perf_counter()
        out = model(**enc, labels=enc["input_ids"])
        out.loss.backward()
        dt = time.perf_counter() - t1
    finally:
        hook.remove()
        for p, req in frozen:
            p.requires_grad_(req)
        model.train(was)
    return Calibration(
        gen_tokens_per_s=tps,
        train_s_per_seq=dt / batch,
        seconds=time.perf_counter() - t0,
        completion_tokens_mean=stats.completion_tokens / batch,
    )


def estimate_seconds(
    plan: RunPlan,
    cal: Calibration,
    *,
    n_val: int,
    sft_examples: int,
    synthesis_questions: int,
    searched_questions: int = 0,
    prm_factor: float = 0.0,
    augmentation_questions: int = 0,
    augmentation_tokens: int = 0,
    trained_tokens: float | None = None,
    probe_prompts: int = 0,
    baseline: bool = True,
) -> dict[str, float]:
    """Seconds per stage, generation priced at the calibrated batch's throughput (on a CPU nearly flat in the
    batch size; on a GPU larger batches run faster, so the estimate errs long).

    Lengths: the base model's replies (synthesis, the baseline evaluation; RL without SFT) are priced at full
    length, a bound a batch usually reaches since one long reply holds the batch; after SFT, replies take the
    length of the responses SFT trains on (``trained_tokens``: the reference responses' mean), which a task
    with one-word answers makes ten times shorter than the budget.

    Every stage that takes time has its part (they are the stages of :data:`PARTS`, in the order they run):
    the baseline validation, the RL probe (``probe_prompts`` groups of rollouts), the evaluations during
    training. Synthesis: ``synthesis_questions`` rows with a reference answer at ``samples_per_question`` tries,
    ``searched_questions`` without one at their whole best-of-k budget (rounds that stop paying end sooner). RL:
    its step budget or its time budget, whichever ends first (patience may end it sooner)."""
    L = plan.max_completion_length  # noqa: N806 - the usual symbol
    per_seq = L / cal.gen_tokens_per_s  # one full-length sequence's share of a batched generation
    # A batch runs until its longest reply ends: price trained replies at twice their mean, within the budget.
    tuned = min(L, 2 * trained_tokens) if trained_tokens and plan.sft_enabled else L
    per_tuned = tuned / cal.gen_tokens_per_s
    per_eval = per_tuned * n_val * plan.eval_samples
    out = dict.fromkeys(PARTS, 0.0)
    out["augmentation"] = augmentation_tokens / cal.gen_tokens_per_s * augmentation_questions
    if plan.sft_enabled:
        out["synthesis"] = per_seq * (
            synthesis_questions * plan.samples_per_question
            + searched_questions * plan.samples_without_reference
        )
        out["sft"] = plan.sft_epochs * sft_examples * cal.train_s_per_seq * 1.5
    if n_val and baseline and (plan.rl_enabled or plan.sft_enabled):
        out["validation"] = per_seq * n_val * plan.eval_samples
    if plan.rl_enabled:
        seqs = plan.rl_batch_size * plan.num_generations
        # Rollouts for every sequence; training over every sequence (a no-grad logprob pass is skipped by TRL
        # when num_iterations == 1); PRM adds verifier forward passes.
        step = per_tuned * seqs + seqs * cal.train_s_per_seq * (1.0 + prm_factor)
        steps = plan.rl_max_steps
        if plan.rl_time_budget_s is not None and step > 0:
            steps = min(steps, max(1, round(plan.rl_time_budget_s / step)))
        out["rl"] = steps * step
        # The probe: a group of rollouts for each probed prompt (a second, doubled try is not priced).
        out["probe"] = per_tuned * probe_prompts * plan.num_generations
        n_evals = -(-steps // plan.eval_interval) + 1
        out["eval"] = n_evals * per_eval if n_val else 0.0
    elif n_val and plan.sft_enabled:
        out["eval"] = per_eval
    return out


PARTS = ("augmentation", "synthesis", "validation", "sft", "probe", "rl", "eval")
"""The parts of a job's estimate, in the order they run."""


def parts_done(done: list[str], counters: dict[str, Any], *, rl: bool) -> set[str]:
    """The estimate's parts a run has finished, from its state (``RunState.done`` and its counters); ``rl``:
    whether the plan has an RL stage (the evaluations end with it, else with SFT)."""
    finished = {part for part, marker in _DONE_MARKERS.items() if marker in done}
    if "rl_probe" in counters:
        finished.add("probe")
    if ("rl" if rl else "sft") in done:
        finished.add("eval")
    return finished


_DONE_MARKERS = {
    "augmentation": "augment",
    "synthesis": "synthesis",
    "validation": "eval0",
    "sft": "sft",
    "rl": "rl",
}


@dataclass
class Remaining:
    """Time left, re-estimated from measured progress: the parts not done yet at their estimate, scaled by how
    long the finished parts really took against theirs, plus the stage in progress (``current_left``, from
    its measured step times)."""

    parts: dict[str, float]
    started: float
    """When the estimate was made (monotonic); the parts done since then were measured against it."""
    done_at_start: frozenset[str] = frozenset()
    """Parts finished before the estimate (a resumed run): not measured."""

    def factor(self, finished: set[str], now: float) -> float:
        """Measured / estimated over the parts finished since the start, within [0.25, 8]; 1 until they
        amount to 10 s of estimate (too little to judge)."""
        estimated = sum(self.parts.get(p, 0.0) for p in finished - self.done_at_start)
        if estimated < 10.0:
            return 1.0
        return min(8.0, max(0.25, (now - self.started) / estimated))

    def seconds_left(
        self,
        finished: set[str],
        *,
        now: float,
        current: tuple[str, ...] = (),
        current_left: float = 0.0,
    ) -> float:
        """``current``: the parts the stage in progress covers (RL's steps include its evaluations), whose
        time left is ``current_left``."""
        factor = self.factor(finished, now)
        later = sum(v for k, v in self.parts.items() if k not in finished and k not in current)
        return later * factor + current_left
