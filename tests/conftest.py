"""Test-wide set-up: every test session gets its own OPENRFT_HOME and SQLite database, so nothing touches
the user's ~/.openrft, and the process never reaches a model hub."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="openrft-test-home-"))


def pytest_configure(config: pytest.Config) -> None:
    os.environ["OPENRFT_HOME"] = str(_HOME)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("OPENRFT_BOOTSTRAP_API_KEY", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def test_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama + tokenizer built locally (no downloads), shared by the whole session."""
    from tests.support.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (a SQLAlchemy URL), dropped after it."""
    from tests.support import create_database

    url, drop = create_database("openrft_t")
    try:
        yield url.replace("postgresql://", "postgresql+psycopg://")
    finally:
        drop()
