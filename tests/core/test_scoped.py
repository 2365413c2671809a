"""The one organization-scoped lookup: another tenant's row is the same None as an unknown id."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from core import ids
from core.db.base import Base
from core.db.models import File, FineTunedModel, Organization
from core.db.scoped import owned


def test_rows_are_found_only_for_their_organization(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'scoped.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        mine, theirs = (
            Organization(id=ids.org_id(), name="mine"),
            Organization(id=ids.org_id(), name="theirs"),
        )
        s.add_all([mine, theirs])
        s.flush()
        f = File(
            id=ids.file_id(), org_pk=mine.pk, filename="t.jsonl", purpose="fine-tune", bytes=1,
            storage_key="k", sha256="0" * 64,
        )  # fmt: skip
        m = FineTunedModel(
            id="ft:base:mine::ftjob-1", org_pk=mine.pk, base_model="base", parent="base", path="/m"
        )
        s.add_all([f, m])
        s.flush()
        assert owned(s, File, f.id, mine.pk) is f and owned(s, FineTunedModel, m.id, mine.pk) is m
        assert owned(s, File, f.id, theirs.pk) is None and owned(s, FineTunedModel, m.id, theirs.pk) is None
        assert owned(s, File, "file-unknown", mine.pk) is None
    engine.dispose()
