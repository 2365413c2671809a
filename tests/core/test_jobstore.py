"""What workers write about a job reaches PostgreSQL whatever the text: model output and grader messages can
hold NUL characters, which PostgreSQL text and JSONB refuse (a metrics event with one used to fail the job)."""

from __future__ import annotations

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core import ids, jobstore
from core.db.base import Base
from core.db.models import Job, JobEvent, Organization


def test_nul_characters_are_stored_as_replacement_characters(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    Base.metadata.create_all(engine)
    try:
        with Session(engine) as s:
            org = Organization(id=ids.org_id(), name="nul")
            s.add(org)
            s.flush()
            job = Job(
                id=ids.job_id(), org_pk=org.pk, model="tiny-test", training_file="file-x", seed=1,
                status="running", method={"type": "reinforcement"}, resolved_config={}, result_files=[],
            )  # fmt: skip
            s.add(job)
            s.flush()
            rollouts = {"prompt": "q\x00", "completions": [{"text": "a\x00b", "reward": 0.0}]}
            jobstore.add_event(
                s, job.pk, "Step 1\x00", type="metrics", data={"step": 1, "rollouts": rollouts}
            )
            error = {"code": "grader_error", "message": "bad\x00byte", "param": None}
            assert jobstore.transition(s, job.id, "failed", from_=("running",), error=error)
            s.commit()
        with Session(engine) as s:
            event = s.scalars(select(JobEvent)).one()
            assert event.message == "Step 1\ufffd"
            assert event.data == {
                "step": 1, "rollouts": {"prompt": "q\ufffd", "completions": [{"text": "a\ufffdb", "reward": 0.0}]}
            }  # fmt: skip
            assert s.scalars(select(Job)).one().error == {**error, "message": "bad\ufffdbyte"}
    finally:
        engine.dispose()


def test_storable_leaves_other_values_alone() -> None:
    value = {"n": 1, "x": 0.5, "none": None, "ok": True, "list": ["a", ("b\x00",)], "k\x00": "v"}
    assert jobstore.storable(value) == {
        "n": 1, "x": 0.5, "none": None, "ok": True, "list": ["a", ["b\ufffd"]], "k\ufffd": "v"
    }  # fmt: skip
