"""The same Alembic migrations run on PostgreSQL and SQLite: upgrade, downgrade to base, upgrade again,
and the result matches the models (no drift between models and migrations)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mig.db'}"


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _no_drift(url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from core.db import models  # noqa: F401
    from core.db.base import Base

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrade_downgrade_upgrade(backend: str, request: pytest.FixtureRequest) -> None:
    from core.db.base import Base
    from core.db.migrate import downgrade, upgrade

    url = request.getfixturevalue(f"{backend}_url")
    upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
    assert _no_drift(url) == []
    downgrade(url, "base")
    assert _tables(url) == set()
    upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
