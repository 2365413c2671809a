"""``openrft jobs create|list|get|follow|cancel|pause|resume|events|checkpoints|rollouts``."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
from pathlib import Path
from typing import Any, cast

from rich.text import Text

from openrft import BadRequestError, NotFoundError, OpenRFT
from openrft._exceptions import error_message
from openrft.commands.common import (
    CLIError,
    connection_options,
    err,
    json_object_arg,
    json_option,
    make_client,
    out,
    pairs,
    print_json,
    print_object,
    print_table,
    when,
)
from openrft.resources.fine_tuning._job_body import merge_options
from openrft.types import FineTuningJob

DEFAULT_MODEL = "smollm2-135m-instruct"


def _file_ref(client: OpenRFT, value: str | None, method: str, what: str) -> str | None:
    """A file id as given, or a local path uploaded (after local validation) to get one."""
    if value is None:
        return None
    path = Path(value)
    if value.startswith("file-") and not path.exists():
        return value
    if not path.is_file():
        raise CLIError(f"{what}: {value!r} is neither a file id (file-...) nor an existing file")
    f = client.files.create(path, validate=method)  # type: ignore[arg-type]
    err.print(f"uploaded {path} as {f.id}")
    return f.id


def _check_model(client: OpenRFT, model: str) -> None:
    try:
        client.models.retrieve(model)
    except NotFoundError:
        available = ", ".join(m.id for m in client.models.list() if m.parent is None)
        raise CLIError(f"unknown base model {model!r}; available: {available}") from None


def report(job: FineTuningJob) -> int:
    """One line on how the job ended; the exit status says whether it succeeded."""
    if job.status == "succeeded":
        out.print(f"{job.id} succeeded: fine-tuned model {job.fine_tuned_model}")
        return 0
    if job.status == "paused":
        out.print(f"{job.id} is paused; resume it with: openrft jobs resume {job.id}")
        return 0
    detail = f": {job.error.message}" if job.error else ""
    out.print(f"{job.id} {job.status}{detail}")
    return 1


def _check_grader(client: OpenRFT, grader: dict[str, Any]) -> None:
    try:
        client.graders.validate(grader=cast(Any, grader))  # any grader type the server knows
    except BadRequestError as exc:
        param = f" ({exc.param})" if exc.param else ""
        raise CLIError(f"--grader{param}: {error_message(exc)}") from None


_ITEM_FIELD = re.compile(r"\{\{\s*item\.([A-Za-z_][A-Za-z0-9_]*)")


def _check_item_fields(templates: list[Any], files: list[str | None]) -> None:
    """Every row of the local files has the item fields the grader (and openrft.reference) read, checked
    before anything is uploaded: the service would refuse the job, leaving the upload behind."""
    fields = sorted(set(_ITEM_FIELD.findall(json.dumps(templates))))
    for value in files:
        path = Path(value) if value else None
        if not fields or path is None or not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    row = json.loads(line) if line.strip() else None
                except ValueError:
                    continue  # the file's own validation reports it, line and all
                if not isinstance(row, dict):
                    continue
                missing = [f for f in fields if f not in row]
                if missing:
                    raise CLIError(
                        f"the grader uses {{{{ item.{missing[0]} }}}}, but line {number} of {path} has no such "
                        f"field (its fields: {', '.join(sorted(row)) or 'none'}); fix the field name in the "
                        "grader or add it to every row"
                    )


def create(args: argparse.Namespace) -> int:
    grader = json_object_arg(args.grader, "--grader") if args.grader else None
    # Reinforcement is the default: a missing grader is a mistake to report, not a reason to train
    # something else (supervised) without saying so.
    method_type = args.method or "reinforcement"
    if method_type == "reinforcement" and grader is None:
        raise CLIError(
            "reinforcement jobs need --grader JSON (or @grader.json); "
            "for supervised fine-tuning on demonstrations pass --method supervised"
        )
    if method_type == "supervised" and grader is not None:
        raise CLIError("--grader applies to reinforcement jobs; drop it or use --method reinforcement")
    options: dict[str, Any] = json_object_arg(args.openrft, "--openrft") if args.openrft else {}
    client = make_client(args)
    # Before uploading anything for a job that cannot be created.
    if grader is not None:
        _check_grader(client, grader)
    if not (args.training_file.startswith("file-") and (args.validation_file or "file-").startswith("file-")):
        _check_model(client, args.model)
    openrft = merge_options(options, pairs(args.option, "--option")) or None
    if grader is not None:
        _check_item_fields(
            [grader, (openrft or {}).get("reference")], [args.training_file, args.validation_file]
        )
    training = _file_ref(client, args.training_file, method_type, "--training-file")
    assert training is not None
    uploaded = [training] if training != args.training_file else []
    inner: dict[str, Any] = {"grader": grader} if grader is not None else {}
    try:
        validation = _file_ref(client, args.validation_file, method_type, "--validation-file")
        if validation is not None and validation != args.validation_file:
            uploaded.append(validation)
        job = client.fine_tuning.jobs.create(
            model=args.model,
            training_file=training,
            validation_file=validation,
            suffix=args.suffix,
            seed=args.seed,
            metadata=pairs(args.metadata, "--metadata", parse=False) or None,
            method={"type": method_type, method_type: inner},
            hyperparameters=pairs(args.hyperparameter, "--hyperparameter") or None,
            openrft=openrft,
        )
    except Exception:
        for file_id in uploaded:  # a job that was refused leaves no file of ours behind
            with contextlib.suppress(Exception):
                client.files.delete(file_id)
                err.print(f"removed {file_id}: the job was not created")
        raise
    if args.json and not args.follow:
        print_json(job)
        return 0
    out.print(f"{job.id}\t{job.status}")
    if args.follow:
        return report(client.fine_tuning.jobs.follow(job.id, poll_interval=args.poll))
    return 0


def list_jobs(args: argparse.Namespace) -> int:
    page = make_client(args).fine_tuning.jobs.list(
        limit=args.limit, metadata=pairs(args.metadata, "--metadata", parse=False) or None
    )
    jobs = list(page) if args.all else page.data
    if args.json:
        print_json(jobs)
        return 0
    print_table(
        ("ID", "STATUS", "MODEL", "FINE-TUNED MODEL", "CREATED"),
        ((j.id, j.status, j.model, j.fine_tuned_model, when(j.created_at)) for j in jobs),
        empty="no jobs",
    )
    if page.has_more and not args.all:
        err.print("[dim]more jobs: use --all or a larger --limit[/dim]")
    return 0


def get(args: argparse.Namespace) -> int:
    job = make_client(args).fine_tuning.jobs.retrieve(args.job_id)
    rows = [
        ("status", job.status),
        ("model", job.model),
        ("method", job.method.type if job.method else None),
        ("training file", job.training_file),
        ("validation file", job.validation_file),
        ("fine-tuned model", job.fine_tuned_model),
        ("result files", ", ".join(job.result_files) or None),
        ("created", when(job.created_at)),
        ("estimated finish", when(job.estimated_finish)),
        ("finished", when(job.finished_at)),
        ("error", f"{job.error.code}: {job.error.message}" if job.error else None),
    ]
    print_object(job, job.id, rows, as_json=args.json)
    return 0


def follow(args: argparse.Namespace) -> int:
    return report(make_client(args).fine_tuning.jobs.follow(args.job_id, poll_interval=args.poll))


def _action(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        jobs = make_client(args).fine_tuning.jobs
        job = getattr(jobs, name)(args.job_id)
        if args.json:
            print_json(job)
        else:
            out.print(f"{job.id}\t{job.status}")
        return 0

    return run


def events(args: argparse.Namespace) -> int:
    page = make_client(args).fine_tuning.jobs.list_events(args.job_id, limit=args.limit)
    items = list(page) if args.all else page.data
    if args.json:
        print_json(items)
        return 0
    for e in reversed(items):  # oldest first, like a log
        out.print(f"{when(e.created_at)}  {e.level:<5}  {e.message}", markup=False)
    return 0


def checkpoints(args: argparse.Namespace) -> int:
    items = list(make_client(args).fine_tuning.jobs.checkpoints.list(args.job_id))
    if args.json:
        print_json(items)
        return 0

    def metric(c: Any, *names: str) -> str | None:
        for name in names:
            value = getattr(c.metrics, name, None)
            if isinstance(value, int | float):
                return f"{value:.3f}"
        return None

    print_table(
        ("STEP", "CHECKPOINT MODEL", "VALID REWARD", "TRAIN REWARD"),
        (
            (
                c.step_number,
                c.fine_tuned_model_checkpoint,
                metric(c, "full_valid_mean_reward", "valid_reward_mean"),
                metric(c, "train_mean_reward", "train_reward_mean"),
            )
            for c in items
        ),
        empty="no checkpoints",
    )
    return 0


ROLLOUTS_SUFFIX = "-rollouts.jsonl"


def _one_line(text: str) -> str:
    """Model output shown one line per cell: line breaks, tabs and control characters (a terminal escape in
    a completion included) are written as escapes such as \\n."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def rollouts(args: argparse.Namespace) -> int:
    """The sampled RL completions of a finished job (its ``rollouts.jsonl`` result file)."""
    client = make_client(args)
    job = client.fine_tuning.jobs.retrieve(args.job_id)
    found = [f for f in job.result_files if client.files.retrieve(f).filename.endswith(ROLLOUTS_SUFFIX)]
    if not found:
        raise CLIError(
            f"{job.id} has no rollouts file (it is {job.status}; a reinforcement job that trained with RL "
            "gets one when it succeeds)"
        )
    lines = [json.loads(line) for line in client.files.content(found[0]).text.splitlines() if line.strip()]
    steps = sorted({r["step"] for r in lines})
    wanted = {args.step} if args.step is not None else set(steps[-args.last :])
    lines = [r for r in lines if r["step"] in wanted]
    if args.json:
        out.print_json(json.dumps(lines))
        return 0
    if not lines:
        err.print(f"no rollouts at step {args.step}" + (f" (steps {steps[0]}-{steps[-1]})" if steps else ""))
        return 1

    def score(value: float | None) -> str | None:
        return None if value is None else f"{value:.3f}"

    for step in sorted(wanted):
        group = [r for r in lines if r["step"] == step]
        out.print(Text.assemble((f"step {step}", "bold"), "  ", _one_line(group[0]["prompt"])))
        print_table(
            ("REWARD", "OUTCOME", "PROCESS", "COMPLETION"),
            (
                (
                    score(r["reward"]),
                    score(r["outcome_reward"]),
                    score(r["process_reward"]),
                    _one_line(r["completion"]),
                )
                for r in group
            ),
            empty="",
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    conn, js = connection_options(), json_option()
    jobs = sub.add_parser("jobs", help="create and manage fine-tuning jobs").add_subparsers(
        dest="jobs_cmd", required=True
    )

    p = jobs.add_parser("create", parents=[conn, js], help="create a fine-tuning job")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"base model (default {DEFAULT_MODEL})")
    p.add_argument("--training-file", "-t", required=True, help="a file id, or a local JSONL file to upload")
    p.add_argument("--validation-file", help="a file id, or a local JSONL file to upload")
    p.add_argument("--grader", "-g", help="the grader, as JSON or @grader.json (reinforcement)")
    p.add_argument(
        "--method",
        choices=("reinforcement", "supervised"),
        default=None,
        help="default reinforcement (needs --grader); supervised trains on the rows' assistant replies",
    )
    p.add_argument(
        "--hyperparameter", "-H", action="append", metavar="KEY=VALUE", help="e.g. -H n_epochs=2 (repeatable)"
    )
    p.add_argument("--openrft", help="OpenRFT options as JSON or @options.json")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        metavar="KEY=VALUE",
        help="one OpenRFT option, e.g. -o rl.max_steps=20",
    )
    p.add_argument("--suffix", help="part of the fine-tuned model's name")
    p.add_argument("--seed", type=int, help="for a reproducible run (default: random)")
    p.add_argument(
        "--metadata", action="append", metavar="KEY=VALUE", help="a label to filter jobs by (repeatable)"
    )
    p.add_argument("--follow", "-f", action="store_true", help="follow the job until it stops")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    p.set_defaults(func=create)

    p = jobs.add_parser("list", parents=[conn, js], help="list jobs, newest first")
    p.add_argument("--limit", type=int, default=20, help="jobs per page")
    p.add_argument("--all", action="store_true", help="every page")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="only jobs with this metadata")
    p.set_defaults(func=list_jobs)

    p = jobs.add_parser("get", parents=[conn, js], help="show a job")
    p.add_argument("job_id")
    p.set_defaults(func=get)

    p = jobs.add_parser(
        "follow",
        parents=[conn],
        help="stream a job's events with a progress bar; exits 0 when it succeeds (or pauses), else 1",
    )
    p.add_argument("job_id")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    p.set_defaults(func=follow)

    for name, help_text in (
        ("cancel", "cancel a job"),
        ("pause", "pause a job"),
        ("resume", "resume a paused job"),
    ):
        p = jobs.add_parser(name, parents=[conn, js], help=help_text)
        p.add_argument("job_id")
        p.set_defaults(func=_action(name))

    p = jobs.add_parser("events", parents=[conn, js], help="a job's events, oldest first")
    p.add_argument("job_id")
    p.add_argument("--limit", type=int, default=100, help="events per page")
    p.add_argument("--all", action="store_true", help="every page")
    p.set_defaults(func=events)

    p = jobs.add_parser("checkpoints", parents=[conn, js], help="a job's checkpoints and their metrics")
    p.add_argument("job_id")
    p.set_defaults(func=checkpoints)

    p = jobs.add_parser(
        "rollouts", parents=[conn, js], help="sampled RL completions with their rewards (a finished job)"
    )
    p.add_argument("job_id")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, help="only this step")
    which.add_argument("--last", type=int, default=3, help="the last N steps (default 3)")
    p.set_defaults(func=rollouts)
