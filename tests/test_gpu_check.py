"""scripts/gpu_check.py, the one-command GPU readiness check: its probes work on CPU (the full --dry-run
runs two tiny jobs; it is run by hand, see the script)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import REPO


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_help_parses() -> None:
    with pytest.raises(SystemExit) as done:
        load_script().main(["--help"])
    assert done.value.code == 0


def test_probe_sees_generate_and_the_simulated_gpu_is_undone(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tests.support.tiny import build_tiny_model

    script = load_script()
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "tiny"))
    with script.observe() as probe:
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False)
    assert probe.generate_devices == ["cpu"]
    before = (torch.cuda.is_bf16_supported, torch.cuda.get_device_capability, torch.cuda.mem_get_info)
    with script.simulated_gpu(bf16=False, capability=(7, 5), total_gib=4):
        assert torch.cuda.is_bf16_supported() is False and torch.cuda.get_device_capability() == (7, 5)
        assert torch.cuda.mem_get_info()[1] == 4 * 2**30
    assert (torch.cuda.is_bf16_supported, torch.cuda.get_device_capability, torch.cuda.mem_get_info) == before


def test_without_a_gpu_it_asks_for_the_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert load_script().main([]) == 2
    assert "--dry-run" in capsys.readouterr().err
