"""Job configuration: validation errors name the field, auto rules resolve per hardware."""

from __future__ import annotations

import pytest

from trainer.config import ConfigError, Hardware, parse_config, plan_run, resolve_config

CPU = Hardware(gpu=False, cpu_count=2)
GPU = Hardware(gpu=True, cpu_count=16)


@pytest.mark.parametrize(
    ("method", "hp", "ext", "param"),
    [
        ("reinforcement", {"n_epochs": 0}, {}, "method.reinforcement.hyperparameters.n_epochs"),
        ("reinforcement", {"batch_size": "big"}, {}, "method.reinforcement.hyperparameters.batch_size"),
        (
            "reinforcement",
            {"compute_multiplier": 11},
            {},
            "method.reinforcement.hyperparameters.compute_multiplier",
        ),
        (
            "reinforcement",
            {"reasoning_effort": "max"},
            {},
            "method.reinforcement.hyperparameters.reasoning_effort",
        ),
        ("reinforcement", {"nope": 1}, {}, "method.reinforcement.hyperparameters.nope"),
        ("supervised", {"eval_interval": 3}, {}, "method.supervised.hyperparameters.eval_interval"),
        ("reinforcement", {}, {"icl_k": -1}, "openrft.icl_k"),
        ("reinforcement", {}, {"prm": {"type": "hf"}}, "openrft.prm.path"),
        ("reinforcement", {}, {"prm": {"type": "endpoint", "base_url": "http://x/v1"}}, "openrft.prm.model"),
        ("reinforcement", {}, {"prm": {"alpha": 1.5}}, "openrft.prm.alpha"),
        (
            "reinforcement",
            {},
            {"sft": {"teacher": {"base_url": "ftp://x", "model": "m"}}},
            "openrft.sft.teacher.base_url",
        ),
        (
            "reinforcement",
            {},
            {"synthesis": {"samples_per_question": "lots"}},
            "openrft.sft.samples_per_question",
        ),
        ("reinforcement", {}, {"sft": {"enabled": False}, "rl": {"enabled": False}}, "openrft.rl.enabled"),
        ("reinforcement", {}, {"rl": {"enabled": False}, "prm": {"type": "self"}}, "openrft.prm.type"),
        ("reinforcement", {}, {"response_template": "no answer slot"}, "openrft.response_template"),
        ("supervised", {}, {"prm": {"type": "self"}}, "openrft.prm"),
        ("supervised", {}, {"icl_k": 3}, "openrft.icl_k"),
        ("dpo", {}, {}, "method.type"),
    ],
)
def test_errors_name_the_field(method: str, hp: dict, ext: dict, param: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(method, hp, ext)
    assert err.value.param == param
    assert param.split(".")[-1] in err.value.message or "openrft" in err.value.message


def test_message_says_what_to_change() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config("reinforcement", {"n_epochs": 0}, {})
    assert "greater than or equal to 1" in err.value.message and "'auto'" in err.value.message


def test_echo_keeps_auto_and_redacts_keys() -> None:
    out = resolve_config(
        "reinforcement",
        {"n_epochs": 2},
        {"sft": {"teacher": {"base_url": "http://t/v1", "model": "m", "api_key": "secret"}}},
    )
    assert out["hyperparameters"]["batch_size"] == "auto"
    assert out["hyperparameters"]["n_epochs"] == 2
    assert out["openrft"]["sft"]["teacher"]["api_key"] == "***"
    assert set(out) == {"hyperparameters", "openrft"}  # "auto" is resolved once, by the worker


def test_auto_rules_fit_the_hardware() -> None:
    cfg = parse_config("reinforcement", {}, {})
    cpu = plan_run(cfg, n_train=100, hardware=CPU)
    gpu = plan_run(cfg, n_train=100, hardware=GPU, vllm_available=True)
    # CPU: RL may run 3 epochs of 50 steps, capped at 120 and bounded by patience and 12 minutes; GPU: the
    # paper's budgets.
    assert cpu.rl_max_steps == 120 and cpu.num_generations == 4 and cpu.max_completion_length == 128
    assert cpu.rl_time_budget_s == 12 * 60 and gpu.rl_time_budget_s is None
    assert cpu.samples_per_question == 2 and cpu.rollout_engine == "transformers"
    assert gpu.rl_max_steps == 6 * 13  # 6 episodes of ceil(100 / 8) steps
    assert gpu.samples_per_question == 16 and gpu.sft_epochs == 8 and gpu.rollout_engine == "vllm"
    assert cpu.eval_interval == 13  # about 4 evaluations an epoch
    paper = plan_run(
        parse_config("reinforcement", {}, {"eval": {"protocol": "paper"}}), n_train=100, hardware=CPU
    )
    assert paper.eval_samples == 3 and paper.eval_temperature == 0.6


def test_compute_multiplier_scales_budget() -> None:
    small = plan_run(
        parse_config("reinforcement", {"compute_multiplier": 0.25}, {}), n_train=100, hardware=CPU
    )
    big = plan_run(parse_config("reinforcement", {"compute_multiplier": 4}, {}), n_train=1000, hardware=CPU)
    assert small.rl_max_steps == 30 and big.rl_max_steps == 480
    assert small.num_generations == 2 and big.num_generations == 8


def test_synthesis_alias_and_supervised_defaults() -> None:
    cfg = parse_config("reinforcement", {}, {"synthesis": {"samples_per_question": 0}})
    assert cfg.openrft.sft.samples_per_question == 0
    plan = plan_run(
        parse_config("supervised", {"n_epochs": 5, "batch_size": 2}, {}), n_train=10, hardware=CPU
    )
    assert (plan.sft_epochs, plan.sft_batch_size, plan.rl_enabled) == (5, 2, False)


def test_config_module_is_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, trainer, trainer.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
