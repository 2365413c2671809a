"""The import table of docs/DESIGN.md, checked on every import statement of the packages (those inside
functions too: a lazy import is still a dependency). `make lint` runs this file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

OURS = ("core", "app", "workers", "trainer", "serving", "openrft", "migrations")

# What each package may import of ours (a package, or one module of it); the rest of ours is refused.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    # openrft.validation: the JSONL line format, shared with the client; migrations: where its scripts are.
    "core": ("openrft.validation", "migrations"),
    # The grader engine, the job options and the user-URL policy are the trainer's public face to the API;
    # openrft.cli holds the server commands' arguments, which the server's entry point (app.cli) parses.
    "app": (
        "core",
        "serving",
        "trainer.config",
        "trainer.graders",
        "trainer.public_urls",
        "openrft.validation",
        "openrft.cli",
    ),
    "workers": ("core", "trainer", "serving", "openrft.validation"),
    "serving": ("trainer.models",),  # one loader for the trained models' files
    "trainer": (),
    "openrft": (),  # the client: nothing of the server, its CLI's server commands included
    "migrations": ("core",),
}

# Libraries a package must not import even lazily.
MUST_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "core": ("fastapi", "starlette", "torch"),
    "workers": ("fastapi", "starlette"),
    "app": ("torch",),
    "openrft": ("fastapi", "starlette", "sqlalchemy", "celery", "torch"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from trainer import config` names the module trainer.config.
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(package: str) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top == package:
                continue
            ours_refused = top in OURS and not any(_within(module, p) for p in MAY_IMPORT[package])
            lib_refused = top in MUST_NOT_IMPORT.get(package, ())
            if ours_refused or lib_refused or top == "tests":  # test support never ships
                out.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", OURS)
def test_imports_follow_the_design_table(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_lazy_and_from_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "trainer"
    pkg.mkdir()
    (pkg / "x.py").write_text(
        "from core import ids\n\ndef f():\n    import app.main\n    from trainer import y\n"
        "    from tests.support.tiny import build_tiny_model\n"
    )
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert violations("trainer") == [
        "trainer/x.py:1 imports core.ids",
        "trainer/x.py:4 imports app.main",
        "trainer/x.py:6 imports tests.support.tiny.build_tiny_model",
    ]
