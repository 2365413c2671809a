"""The API process must stay torch-free: importing the API-side serving modules may not pull in torch."""

from __future__ import annotations

import subprocess
import sys


def test_api_side_modules_do_not_import_torch() -> None:
    modules = "serving.service, serving.proxy, serving.registry, serving.supervisor"
    modules += ", serving.backends, serving.vllm_backend, serving.errors, serving.engine.reasoning"
    code = f"import sys, {modules}; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
