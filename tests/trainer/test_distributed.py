"""trainer.distributed: the world, the launch, one voice and one decision, on real gloo process groups."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainer import distributed
from trainer.config import ConfigError, Hardware, check_hardware, parse_config, plan_run
from trainer.control import Stopper
from trainer.distributed import (
    Launch,
    World,
    launch_command,
    launch_env,
    padded_shard,
    run_distributed,
    shards_weights,
)
from trainer.interface import NullSink

SCENARIOS = str(Path(__file__).with_name("dist_scenarios.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def results(out: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(n)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by its parent.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def wait_for(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


# -- the world and the command (no processes) ----------------------------------------------------------------


def test_world_from_env() -> None:
    assert World.from_env({}) == World(0, 0, 1)
    assert World.from_env({}).is_main and not World.from_env({}).distributed
    w = World.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (w.rank, w.local_rank, w.world_size, w.is_main, w.distributed) == (3, 1, 4, False, True)
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "x"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(ValueError, match="distributed environment"):
            World.from_env(bad)
    assert distributed.inside_launch({"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert not distributed.inside_launch({})


def test_launch_command_and_environment() -> None:
    launch = Launch(processes=2, nnodes=3, node_rank=1, master_addr="10.1.2.3", master_port=29555)
    cmd = launch_command(["run", "job.yaml"], launch)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    for flag in ("--nnodes=3", "--node-rank=1", "--nproc-per-node=2", "--rdzv-backend=static"):
        assert flag in cmd
    assert "--master-addr=10.1.2.3" in cmd and "--master-port=29555" in cmd
    assert cmd[-4:] == ["-m", "trainer", "run", "job.yaml"]
    assert launch_command(["script.py", "a"], launch, module=None)[-2:] == ["script.py", "a"]

    cpu = launch_env(Launch(processes=2), {"PATH": "/bin"})
    assert cpu[distributed.BACKEND_ENV] == "gloo" and "CUDA_VISIBLE_DEVICES" not in cpu
    assert int(cpu["OMP_NUM_THREADS"]) >= 1
    assert launch_env(Launch(processes=2), {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"

    gpus = Launch(gpus=(2, 3, 5))
    assert gpus.nproc == 3 and gpus.chosen_backend == "nccl"
    env = launch_env(gpus, {})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3,5" and env[distributed.BACKEND_ENV] == "nccl"
    assert launch_env(Launch(gpus=(0,), backend="gloo"), {})[distributed.BACKEND_ENV] == "gloo"
    with pytest.raises(ValueError, match="need as many GPUs"):
        Launch(processes=3, gpus=(0, 1))
    with pytest.raises(ValueError, match="node_rank"):
        Launch(nnodes=2, node_rank=2)


def test_single_process_helpers_change_nothing() -> None:
    one = World()
    assert distributed.broadcast({"a": 1}, one) == {"a": 1}
    assert distributed.gather_to_main(5, one) == [5] and distributed.all_gather(5, one) == [5]
    distributed.barrier(one)
    sink = NullSink()
    assert distributed.main_sink(sink, one) is sink
    assert type(distributed.make_stopper(None, max_minutes=None, world=one)) is Stopper
    assert distributed.on_main(lambda: 7, world=one) == 7


def test_shards_and_batches() -> None:
    items = list(range(7))
    parts = [distributed.shard(items, World(r, r, 3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert distributed.unshard(parts) == items
    assert distributed.per_rank(8, World(0, 0, 2)) == 4
    with pytest.raises(distributed.TrainerError, match="multiple of"):
        distributed.per_rank(6, World(0, 0, 4), what="RL batch")


def test_main_only_runs_on_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    write = distributed.main_only(lambda x: x * 2)
    assert write(2) == 4
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert write(2) is None


def test_main_only_sink_drops_other_ranks_events() -> None:
    class Count(NullSink):
        n = 0

        def message(self, text: str, *, level: Any = "info") -> None:
            self.n += 1

    main, other = Count(), Count()
    distributed.MainOnlySink(main, World(0, 0, 2)).message("x")
    distributed.MainOnlySink(other, World(1, 1, 2)).message("x")
    assert (main.n, other.n) == (1, 0)


def test_strategy_args_point_at_shipped_configs() -> None:
    assert distributed.strategy_args("ddp") == {"ddp_find_unused_parameters": False}
    for name in ("deepspeed_zero2", "deepspeed_zero3"):
        path = Path(distributed.strategy_args(name)["deepspeed"])  # type: ignore[arg-type]
        assert json.loads(path.read_text())["zero_optimization"]["stage"] == int(name[-1])
    fsdp = distributed.strategy_args("fsdp")
    assert fsdp["fsdp"] == "full_shard auto_wrap" and fsdp["fsdp_config"]["version"] == 2


# -- the job option --------------------------------------------------------------------------------------------


def test_distributed_option_and_hardware_check() -> None:
    cfg = parse_config("reinforcement", {}, {})
    assert (cfg.openrft.distributed.processes, cfg.openrft.distributed.strategy) == (1, "ddp")
    with pytest.raises(ConfigError) as e:
        parse_config("reinforcement", {}, {"distributed": {"strategy": "zero9"}})
    assert e.value.param == "openrft.distributed.strategy"
    sharded = parse_config("supervised", {}, {"distributed": {"processes": 2, "strategy": "deepspeed_zero3"}})
    check_hardware(sharded, Hardware(gpu=True, cpu_count=16))
    with pytest.raises(ConfigError, match="GPUs") as e:
        plan_run(sharded, n_train=10, hardware=Hardware(gpu=False, cpu_count=2))
    assert e.value.param == "openrft.distributed.strategy"


def test_cli_relaunches_itself_with_the_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import __main__ as cli

    spec = {
        "job_id": "ftjob-d", "method": "supervised", "base_model": "m", "model_source": "m",
        "training_file": "train.jsonl", "openrft": {"distributed": {"processes": 2}},
    }  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    seen: dict[str, Any] = {}

    def fake_run(args: list[str], launch: Launch, **kw: Any) -> int:
        seen.update(args=args, launch=launch, **kw)
        (Path(args[3]) / cli.LAUNCH_RESULT).write_text(
            json.dumps({"status": "paused", "model_dir": None, "result_file": None, "snapshot_dir": "s"})
        )
        return 0

    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distributed, "run_distributed", fake_run)
    monkeypatch.setattr(Hardware, "detect", staticmethod(lambda: Hardware(gpu=False, cpu_count=2)))
    assert cli.main(["run", str(path), "--workdir", str(tmp_path / "w")]) == 3  # paused
    assert seen["args"][:2] == ["run", str(path.resolve())]
    assert seen["launch"].nproc == 2 and seen["launch"].chosen_backend == "gloo"
    assert seen["control_file"] == (tmp_path / "w").resolve() / "control"

    spec["openrft"] = {"distributed": {"processes": 2, "strategy": "fsdp"}}
    path.write_text(yaml.safe_dump(spec))
    seen.clear()
    assert cli.main(["run", str(path), "--workdir", str(tmp_path / "w")]) == 1
    assert not seen


def test_file_control(tmp_path: Path) -> None:
    f = tmp_path / "control"
    control = distributed.FileControl(f, every_s=0)
    assert control.poll() is None
    f.write_text("pause\n")
    assert control.poll() == "pause"
    f.write_text("cancel")
    assert control.poll() == "cancel"


# -- real process groups (gloo on 127.0.0.1) -------------------------------------------------------------------


def run_scenario(out: Path, *args: str, processes: int = 2, port: int | None = None, **kw: Any) -> int:
    out.mkdir(parents=True, exist_ok=True)
    launch = Launch(processes=processes, master_port=port or free_port(), **kw)
    return run_distributed([SCENARIOS, args[0], str(out), *args[1:]], launch, module=None)


def test_one_voice_and_one_decision_on_two_ranks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_scenario(out, "one_voice") == 0
    r0, r1 = results(out, 2)
    assert r0["world_size"] == 2
    # Rank 0's Control asked to pause on its 3rd poll: both ranks stopped after step 3, and only then.
    assert (r0["stopped_at"], r0["kind"]) == (r1["stopped_at"], r1["kind"]) == (3, "pause")
    assert not any(r0["local_checks"] + r1["local_checks"])
    assert (r0["events"], r1["events"]) == ([1, 2, 3], [])
    assert r0["shared"] == r1["shared"] == {"from": 0}
    assert r0["main_stop"] == r1["main_stop"] == "pause"  # a stop inside on_main reaches every rank
    assert (r0["gathered"], r1["gathered"]) == ([0, 10], None)
    assert r0["everyone"] == r1["everyone"] == ["r0", "r1"]
    assert (out / "text.txt").read_text() == "written by 0"
    assert sorted(p.name for p in (out / "shared").iterdir()) == ["part-0", "part-1"]
    assert sorted(p.name for p in (out / "main").iterdir()) == ["part-0"]
    ckpt = out / "ckpts" / "step-4"
    assert sorted(p.name for p in ckpt.iterdir()) == ["openrft_metrics.json", "part-0", "part-1"]
    assert (r0["checkpoint_events"], r1["checkpoint_events"]) == ([4], [])
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_two_nodes_meet_at_one_static_address(tmp_path: Path) -> None:
    port = free_port()
    codes: dict[int, int] = {}

    def node(rank: int) -> None:
        codes[rank] = run_scenario(tmp_path, "allreduce", processes=1, port=port, nnodes=2, node_rank=rank)

    threads = [threading.Thread(target=node, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == {0: 0, 1: 0}
    assert [r["sum"] for r in results(tmp_path, 2)] == [2.0, 2.0]


def _hanging(out: Path) -> tuple[threading.Thread, dict[str, int]]:
    code: dict[str, int] = {}
    thread = threading.Thread(target=lambda: code.update(rc=run_scenario(out, "hang")), daemon=True)
    thread.start()
    assert wait_for(lambda: (out / "pid-0").exists() and (out / "pid-1").exists(), 60)
    time.sleep(0.3)
    return thread, code


def test_sigkill_of_one_rank_ends_the_others(tmp_path: Path) -> None:
    thread, code = _hanging(tmp_path)
    pid0, pid1 = (int((tmp_path / f"pid-{r}").read_text()) for r in (0, 1))
    t0 = time.monotonic()
    os.kill(pid1, signal.SIGKILL)
    thread.join(30)
    assert not thread.is_alive() and code["rc"] != 0
    assert time.monotonic() - t0 < 10
    assert wait_for(lambda: not alive(pid0), 5)


def test_killed_launcher_leaves_no_orphan(tmp_path: Path) -> None:
    """SIGTERM of the parent stops every rank; so does SIGKILL of torchrun itself (the ranks die with it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = tmp_path / sig.name
        out.mkdir()
        code = (
            "import sys; from trainer.distributed import Launch, run_distributed; "
            f"sys.exit(run_distributed([{SCENARIOS!r}, 'hang', {str(out)!r}], "
            f"Launch(processes=2, master_port={free_port()}), module=None))"
        )
        parent = subprocess.Popen([sys.executable, "-c", code])
        try:
            assert wait_for(lambda: (out / "pid-0").exists() and (out / "pid-1").exists(), 60)  # noqa: B023
            pids = [int((out / f"pid-{r}").read_text()) for r in (0, 1)]
            time.sleep(0.3)
            if sig == signal.SIGTERM:
                parent.send_signal(signal.SIGTERM)
            else:  # the ranks' parent is torchrun
                torchrun = int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
                os.kill(torchrun, signal.SIGKILL)
            assert wait_for(lambda: not any(alive(p) for p in pids), 15), sig  # noqa: B023
            assert parent.wait(45) != 0
        finally:
            parent.kill()


@pytest.mark.slow
def test_project_trainers_on_two_gloo_ranks(tmp_path: Path, tiny_model: Path) -> None:
    """make_sft_trainer and grpo_args as the pipeline builds them, on 1 and 2 processes with one global batch:
    the ranks stay identical (gradients are all-reduced) and SFT's losses match the single process."""
    for mode in ("sft", "grpo"):
        runs = {}
        for n in (1, 2) if mode == "sft" else (2,):
            out = tmp_path / f"{mode}-{n}"
            assert run_scenario(out, "train", mode, str(tiny_model), processes=n) == 0
            runs[n] = results(out, n)
        two = runs[2]
        assert two[0]["changed"] and two[0]["fingerprint"] == pytest.approx(two[1]["fingerprint"], rel=1e-9)
        assert two[0]["steps"] == (3 if mode == "sft" else 2)
        if mode == "sft":
            # The same batches; the loss is averaged per rank, then over ranks: equal to about 1e-3.
            assert two[0]["losses"] == pytest.approx(runs[1][0]["losses"], rel=2e-3)


def test_padded_shards_and_which_strategies_shard_weights() -> None:
    items = list(range(7))
    shares = [padded_shard(items, World(rank=r, world_size=3, local_rank=r)) for r in range(3)]
    assert [mine for mine, _ in shares] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [pads for _, pads in shares] == [[], [0], [0]]  # every rank generates 3
    assert padded_shard([], World(rank=1, world_size=2, local_rank=1)) == ([], [])
    two = World(rank=0, world_size=2, local_rank=0)
    assert shards_weights("deepspeed_zero3", two) and shards_weights("fsdp", two)
    assert not shards_weights("deepspeed_zero2", two) and not shards_weights("ddp", two)
    assert not shards_weights("fsdp", World(rank=0, world_size=1, local_rank=0))


def test_generation_in_lockstep_when_every_forward_is_a_collective(tmp_path: Path, tiny_model: Path) -> None:
    """Unequal shares, padded: both ranks make the same generation calls and forwards (and finish), and the padding
    is generated but not counted."""
    out = tmp_path / "lockstep"
    assert run_scenario(out, "lockstep", str(tiny_model)) == 0
    r0, r1 = results(out, 2)
    assert (r0["mine"], r0["pads"], r1["mine"], r1["pads"]) == (3, 0, 2, 1)
    assert r0["calls"] == r1["calls"] == 2 and r0["forwards"] == r1["forwards"] > 0
    assert r0["outs"] == r1["outs"] == 3
