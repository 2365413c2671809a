"""Whether a run can learn, checked before and while it spends its budget.

- :func:`group_spread`: before RL (trainer.stages.probe), a few training prompts get a group of rollouts each with
  the RL sampling settings. GRPO learns only from groups whose rewards differ; a group scored all alike has zero advantage and
  gives no gradient, so the share of such groups says up front whether RL can move the policy.
- :class:`RLWatch`: during RL, ends the stage early when the groups stay flat for several steps, or when
  validation has not improved for several evaluations (the best checkpoint is kept either way), and turns
  grader errors on more than a small share of samples into a warning, then a failure.
- :func:`wilson_interval`: the 95% interval of an accuracy measured on a few validation rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def wilson_interval(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and at 0 or n successes, unlike p +- z*se)."""
    if n <= 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(round(successes), n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


# Grader failures above these shares of the samples warn, then fail the job (RL steps, the probe, evaluations).
ERROR_WARN, ERROR_FAIL = 0.1, 0.5
# Errors that describe the model's reply, not the grader: a reply with no answer in it rightly scores 0.
SAMPLE_ERRORS = frozenset({"sample_parse_error", "truncated_observation_error"})


# RL counts the completions its process reward model could not score (see trainer.prm) under this key, beside
# the grader's own error keys: the watch treats both kinds of failure alike.
PROCESS_REWARD_ERROR = "process_reward_error"
_CHECK_GRADER = "check the grader with POST /v1/fine_tuning/alpha/graders/run on a training row"
_CHECK_PRM = "check openrft.prm (its base_url, model and api_key; errors.process_reward in the metrics events says what went wrong)"


def _failing(errors: dict[str, int]) -> tuple[str, str]:
    """Who failed (the grader, the process reward model or both) and what to do about it."""
    prm = PROCESS_REWARD_ERROR in errors
    grader = not prm or any(k != PROCESS_REWARD_ERROR for k in errors)
    parts = [
        (name, check)
        for name, check, on in (("grader", _CHECK_GRADER, grader), ("process reward model", _CHECK_PRM, prm))
        if on
    ]
    advice = "; ".join(check for _, check in parts) + " and start the job again."
    return " and the ".join(name for name, _ in parts), advice[0].upper() + advice[1:]


def grader_failures(errors: dict[str, int] | None) -> dict[str, int]:
    """The error counts that mean the grader itself failed (its code, its endpoint, a missing item field)."""
    return {k: v for k, v in (errors or {}).items() if v and k not in SAMPLE_ERRORS}


def error_share(errors: dict[str, int] | None, samples: int) -> float:
    """Share of graded samples on which the grader failed (a sample counts once even with several errors)."""
    failed = grader_failures(errors)
    if not samples or not failed:
        return 0.0
    return min(1.0, sum(failed.values()) / samples)


@dataclass
class Spread:
    """Reward spread of groups of rollouts (one group per prompt)."""

    groups: int = 0
    flat: int = 0
    """Groups whose rollouts all scored the same (no GRPO gradient)."""
    all_correct: int = 0
    all_wrong: int = 0
    mean_reward: float = 0.0
    samples: int = 0
    grader_errors: dict[str, int] = field(default_factory=dict)

    @property
    def frac_flat(self) -> float:
        return self.flat / self.groups if self.groups else 1.0

    def describe(self) -> str:
        return (
            f"{self.flat}/{self.groups} groups have no reward spread ({self.all_wrong} all wrong, "
            f"{self.all_correct} all correct); mean reward {self.mean_reward:.2f}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "flat": self.flat,
            "all_correct": self.all_correct,
            "all_wrong": self.all_wrong,
            "frac_reward_zero_std": self.frac_flat,
            "mean_reward": self.mean_reward,
            "grader_errors": dict(self.grader_errors),
        }


def group_spread(scores: list[float], group: int, correct: Any) -> Spread:
    """Spread of consecutive groups of ``group`` scores; ``correct(score)`` says what counts as solved."""
    out = Spread(samples=len(scores), mean_reward=sum(scores) / len(scores) if scores else 0.0)
    for i in range(0, len(scores) - group + 1, group):
        g = scores[i : i + group]
        out.groups += 1
        if max(g) - min(g) < 1e-9:
            out.flat += 1
            out.all_correct += int(all(correct(s) for s in g))
            out.all_wrong += int(not any(correct(s) for s in g))
    return out


Action = Literal["warn", "stop", "fail"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    message: str
    code: str = ""


@dataclass
class RLWatch:
    """Step-by-step decisions about an RL stage; the pipeline acts on the verdicts it returns."""

    flat_patience: int = 3
    """Consecutive steps with every group flat before RL ends."""
    eval_patience: int = 2
    """Consecutive RL evaluations without a new best validation reward before RL ends."""
    error_warn: float = ERROR_WARN
    error_fail: float = ERROR_FAIL
    error_window: int = 3
    """Steps over which the grader-error share is measured before failing."""
    flat_run: int = 0
    evals_without_gain: int = 0
    warned_errors: bool = False
    warned_zero: bool = False
    warned_flat: bool = False
    recent: list[tuple[int, int]] = field(default_factory=list)
    """(samples with errors, samples) of the last ``error_window`` steps."""

    def on_step(
        self,
        *,
        frac_flat: float | None,
        errors: dict[str, int],
        samples: int,
        mean_reward: float | None = None,
        step: int | None = None,
    ) -> list[Verdict]:
        out: list[Verdict] = []
        errors = grader_failures(errors)
        at = f"RL step {step}" if step is not None else "An RL step"
        self.recent = [*self.recent, (min(samples, sum(errors.values())), samples)][-self.error_window :]
        bad, seen = sum(b for b, _ in self.recent), sum(n for _, n in self.recent)
        share = bad / seen if seen else 0.0
        kinds = ", ".join(f"{k}: {v}" for k, v in errors.items())
        who, advice = _failing(errors)
        if len(self.recent) == self.error_window and share > self.error_fail:
            out.append(
                Verdict(
                    "fail",
                    f"The {who} failed on {share:.0%} of the samples of the last {self.error_window} RL steps "
                    f"({kinds or 'see the metrics events'}): the reward no longer measures the model. {advice}",
                    code="grader_error",
                )
            )
            return out
        if samples and error_share(errors, samples) > self.error_warn and not self.warned_errors:
            self.warned_errors = True
            out.append(
                Verdict(
                    "warn",
                    f"The {who} failed on {error_share(errors, samples):.0%} of this step's samples ({kinds}); "
                    f"those samples score 0. The job fails if this stays above {self.error_fail:.0%}.",
                )
            )
        if samples and mean_reward is not None and mean_reward <= 0.0 and not self.warned_zero:
            # Every rollout scored 0: say so at once, with the cause, whatever the early-stop settings.
            self.warned_zero = True
            cause = (
                f"the {who} failed on {min(samples, sum(errors.values()))} of its {samples} samples ({kinds}). {advice}"
                if errors
                else "no reply was graded correct: the model does not yet produce answers the grader accepts. "
                "Check the grader on a model reply with POST /v1/fine_tuning/alpha/graders/run, give the task a "
                "stronger start (openrft.reference, more synthesis tries) or a longer answer budget "
                "(reasoning_effort)."
            )
            out.append(Verdict("warn", f"{at}: every rollout scored 0, so it taught nothing; {cause}"))
        self.flat_run = self.flat_run + 1 if frac_flat is not None and frac_flat >= 1.0 else 0
        if 3 <= self.flat_run < self.flat_patience and not self.warned_flat:
            self.warned_flat = True  # early stopping is off: the stage goes on, but the user is told
            out.append(
                Verdict(
                    "warn",
                    f"{at}: for {self.flat_run} steps in a row every group's rollouts scored the same, so RL is "
                    "learning nothing from them (openrft.rl.early_stop is false, so it goes on).",
                )
            )
        if self.flat_run >= self.flat_patience:
            out.append(
                Verdict(
                    "stop",
                    f"RL ended early: for {self.flat_run} steps in a row every group's rollouts scored the same, so "
                    "there was no gradient to learn from. The best checkpoint so far is kept. If the rollouts are "
                    "all wrong, the task needs a stronger start (reference answers, openrft.reference; more "
                    "synthesis tries) or a longer answer budget (reasoning_effort); if all right, RL has nothing "
                    "left to add on these questions.",
                )
            )
        return out

    def on_eval(self, *, improved: bool) -> list[Verdict]:
        self.evals_without_gain = 0 if improved else self.evals_without_gain + 1
        if self.evals_without_gain >= self.eval_patience:
            return [
                Verdict(
                    "stop",
                    f"RL ended early: validation did not improve on the best checkpoint in {self.evals_without_gain} "
                    "evaluations in a row; the best checkpoint is kept (set openrft.rl.patience to wait longer).",
                )
            ]
        return []
