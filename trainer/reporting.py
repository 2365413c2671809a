"""Progress reporting: OpenAI-style ``metrics`` events, the per-step results CSV and finish estimates."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from trainer.checkpoints import atomic_write_text
from trainer.distributed import main_sink
from trainer.interface import EventSink

CSV_COLUMNS = [
    "step",
    "stage",
    "train_loss",
    "train_mean_reward",
    "train_outcome_reward",
    "train_process_reward",
    "full_valid_mean_reward",
    "full_valid_accuracy",
    "valid_loss",
    "frac_reward_zero_std",
    "policy_lag",
    "completion_tokens_mean",
    "grader_errors",
    "learning_rate",
    "sampling_s",
    "grading_s",
    "training_s",
    "eval_s",
    "full_iteration_s",
]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class Reporter:
    """Turns per-step records into sink events and CSV rows; its rows survive pause/resume via ``state``.

    Under a launch every rank keeps the rows; only rank 0 sends the events and writes the CSV."""

    def __init__(self, sink: EventSink, csv_path: Path, *, total_steps: int = 0) -> None:
        self.sink = main_sink(sink)
        self.csv_path = csv_path
        self.total_steps = total_steps
        self.rows: list[dict[str, Any]] = []

    def load_rows(self, rows: list[dict[str, Any]], *, up_to_step: int | None = None) -> None:
        self.rows = [r for r in rows if up_to_step is None or int(r["step"]) <= up_to_step]

    def message(self, text: str, *, level: str = "info") -> None:
        self.sink.message(text, level=level)  # type: ignore[arg-type]

    def step(self, rec: dict[str, Any]) -> None:
        """Report one step. ``rec`` uses the CSV column names (seconds in ``*_s``)."""
        step = int(rec["step"])
        timing = {
            "eval": rec.get("eval_s"),
            "sampling": rec.get("sampling_s"),
            "grading": rec.get("grading_s"),
            "training": rec.get("training_s"),
            "full_iteration": rec.get("full_iteration_s"),
        }
        data: dict[str, Any] = {
            "step": step,
            "total_steps": self.total_steps,
            "stage": rec.get("stage"),
            "train_loss": rec.get("train_loss"),
            "train_mean_reward": rec.get("train_mean_reward"),
            "full_valid_mean_reward": rec.get("full_valid_mean_reward"),
            "full_valid_accuracy": rec.get("full_valid_accuracy"),
            "full_valid_accuracy_ci": rec.get("full_valid_accuracy_ci"),
            "valid_loss": rec.get("valid_loss"),
            "frac_reward_zero_std": rec.get("frac_reward_zero_std"),
            "graded_samples": rec.get("graded_samples"),  # the step's rollouts, every rank's together
            "policy_lag": rec.get("policy_lag"),
            "rollout_policy_version": rec.get("rollout_version"),
            "completion_tokens_mean": rec.get("completion_tokens_mean"),
            "usage": {"graders": rec["grader_usage"]} if rec.get("grader_usage") else None,
            "scores": {
                "train_reward_mean": rec.get("train_mean_reward"),
                "train_outcome_reward_mean": rec.get("train_outcome_reward"),
                "train_process_reward_mean": rec.get("train_process_reward"),
                "valid_reward_mean": rec.get("full_valid_mean_reward"),
            },
            "timing": {"step": {k: v for k, v in timing.items() if v is not None}},
            "errors": {
                "graders": [
                    {"type": k, "count": v} for k, v in (rec.get("grader_error_counts") or {}).items()
                ],
                # What the process reward model's last failure said (its count is among the graders').
                **(
                    {"process_reward": rec["process_reward_error"]} if rec.get("process_reward_error") else {}
                ),
            },
            "learning_rate": rec.get("learning_rate"),
            "rollouts": rec.get("rollouts"),  # best and worst completion of one group: the live view
        }
        data = {k: v for k, v in data.items() if v is not None}
        parts = [f"Step {step}/{self.total_steps} ({rec.get('stage')})"]
        if rec.get("train_loss") is not None:
            parts.append(f"train loss={rec['train_loss']:.4f}")
        if rec.get("train_mean_reward") is not None:
            parts.append(f"train mean reward={rec['train_mean_reward']:.3f}")
        if rec.get("full_valid_mean_reward") is not None:
            parts.append(f"full validation mean reward={rec['full_valid_mean_reward']:.3f}")
        if rec.get("full_valid_accuracy") is not None:
            ci = rec.get("full_valid_accuracy_ci")
            shown = f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
            parts.append(f"validation accuracy={rec['full_valid_accuracy']:.2f}{shown}")
        if rec.get("valid_loss") is not None:
            parts.append(f"validation loss={rec['valid_loss']:.4f}")
        if rec.get("frac_reward_zero_std") is not None:
            parts.append(f"zero-signal groups={rec['frac_reward_zero_std']:.0%}")
        self.sink.metrics(", ".join(parts), data)
        row = {k: rec.get(k) for k in CSV_COLUMNS}
        errs = rec.get("grader_error_counts") or {}
        row["grader_errors"] = sum(errs.values()) if errs else 0
        self.rows = [r for r in self.rows if int(r["step"]) != step] + [row]
        self.write_csv()

    def write_csv(self) -> Path:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in sorted(self.rows, key=lambda r: int(r["step"])):
            w.writerow({k: _fmt(r.get(k)) for k in CSV_COLUMNS})
        atomic_write_text(self.csv_path, buf.getvalue())
        return self.csv_path

    def estimate(self, *, seconds_left: float, step: int) -> None:
        self.sink.estimate(time.time() + max(0.0, seconds_left), step=step, total_steps=self.total_steps)
