"""Before RL: can it learn? Sample a group of rollouts for a few training prompts and measure how many groups
have reward spread (GRPO's gradient). Mostly flat: retry once with groups twice as large and keep them if they
help (fewer steps, the same rollouts). All flat: skip RL and say why and what to change."""

from __future__ import annotations

from typing import Any

from trainer.data import Row
from trainer.stages.context import RunContext


def probe_rl(ctx: RunContext, rows: list[Row]) -> bool:
    """True to run RL (``ctx.plan`` possibly narrowed to the chosen group size), False to skip it.

    The decision is kept in the run state, so a resumed run applies it without probing again. A collective under
    a launch: the ranks share the prompts (:func:`trainer.stages.validation.evaluate_rows`) and all take the same
    decision from the gathered grades."""
    from trainer.stages.validation import evaluate_rows
    from trainer.watch import group_spread

    opts, plan = ctx.options.rl, ctx.plan
    saved = ctx.state.counters.get("rl_probe")
    if saved is None:
        k = min(opts.probe_prompts, len(rows))
        if k == 0:
            return True
        picked = [rows[i * len(rows) // k] for i in range(k)]  # spread over the file, deterministic
        model = ctx.policy_for_rl()
        # The retry doubles the group, not the temperature: a hotter small model mostly rambles to the token
        # limit (slow, and no more often right).
        settings = [(plan.rl_temperature, plan.num_generations)]
        if opts.num_generations == "auto" and plan.num_generations < 16:
            settings.append((plan.rl_temperature, min(16, 2 * plan.num_generations)))
        tried: list[dict[str, Any]] = []
        for temperature, groups in settings:
            res = evaluate_rows(ctx, model, picked, samples=groups, temperature=temperature)
            spread = group_spread(res.scores, groups, ctx.need_grader().correct)
            spread.grader_errors = dict(res.grader_errors)
            ctx.check_grader_errors(spread.grader_errors, spread.samples, "the RL probe")
            tried.append({"temperature": temperature, "num_generations": groups, **spread.as_dict()})
            ctx.sink.metrics(
                f"RL probe: {k} training prompts x {groups} rollouts at temperature {temperature:g}: "
                f"{spread.describe()}.",
                {"step": ctx.state.global_step, "stage": "rl_probe", **tried[-1]},
            )
            if spread.frac_flat < 0.75 or spread.all_correct == spread.groups:
                break
        best = min(tried, key=lambda t: (t["frac_reward_zero_std"], len(tried)))
        flat = best["frac_reward_zero_std"] >= 1.0
        saved = {"tried": tried, "chosen": best, "skip": flat and opts.early_stop, "flat": flat}
        ctx.state.counters["rl_probe"] = saved
        ctx.save_state()
        _announce(ctx, saved, k)
    chosen = saved["chosen"]
    if saved["skip"]:
        return False
    if chosen["num_generations"] != plan.num_generations:
        steps = max(1, round(plan.rl_max_steps * plan.num_generations / chosen["num_generations"]))
        ctx.narrow_plan(num_generations=chosen["num_generations"], rl_max_steps=steps)
        ctx.set_total_steps(ctx.state.stage_offsets["rl"] + steps)
    ctx.narrow_plan(rl_temperature=float(chosen["temperature"]))
    return True


def _announce(ctx: RunContext, saved: dict[str, Any], k: int) -> None:
    chosen = saved["chosen"]
    if saved.get("flat") and not saved["skip"]:
        ctx.sink.message(
            f"RL cannot learn from these probe groups ({chosen['flat']}/{k} without reward spread); it runs "
            "anyway because openrft.rl.early_stop is false.",
            level="warn",
        )
        return
    if not saved["skip"]:
        if len(saved["tried"]) > 1 and chosen is saved["tried"][-1]:
            ctx.sink.message(
                f"RL adapted: groups of {chosen['num_generations']} rollouts (the planned settings left "
                f"{saved['tried'][0]['flat']} of {k} probe groups without reward spread); the step count is scaled "
                "to keep the rollout budget.",
                level="warn",
            )
        elif chosen["frac_reward_zero_std"] >= 0.5:
            ctx.sink.message(
                f"RL will learn from few groups: {chosen['flat']}/{k} probe groups have no reward spread.",
                level="warn",
            )
        return
    if chosen["all_correct"] == chosen["groups"]:
        why = (
            "every probed rollout is already graded correct, so GRPO has nothing to learn from; the model "
            "after SFT is kept. Harder training questions (or a grader with partial credit) give RL a signal."
        )
    else:
        have_refs = any((ctx.refs or {}).values())
        why = (
            "every rollout of every probed prompt scored the same, so GRPO would get no gradient; the model "
            + ("after SFT " if ctx.plan.sft_enabled else "")
            + "is kept. "
            + (
                "SFT on the reference answers did not make any rollout right: the task may be beyond this "
                "model, or it needs worked solutions in the rows (an explanation field) rather than bare "
                "answers; a grader with partial credit also gives RL a signal."
                if have_refs
                else "Check that the grader accepts a correct reply (POST /v1/fine_tuning/alpha/graders/run), "
                "give reference answers (openrft.reference) so SFT teaches the task first, allow longer answers "
                "(reasoning_effort) if replies are cut short, or use a grader with partial credit."
            )
        )
    ctx.sink.message(f"RL skipped: {why}", level="warn")
