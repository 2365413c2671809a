"""The list routes' queries on PostgreSQL stay on their tenant's index whatever the data looks like: a small
organization whose rows are all older than a big one's must not be paged by walking the primary key
backwards past the big one's rows (the planner's choice with ``org_pk = ?``; see app/pagination.py).
bench/load.py measures the same at 10,000 jobs and 100,000 events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session

from tests.support import create_database

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("query-plans")]  # one seeded database


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[Any, dict[str, int]]]:
    from core import ids
    from core.db import migrate

    url, drop = create_database("openrft_plans")
    sa_url = url.replace("postgresql://", "postgresql+psycopg://")
    migrate.upgrade(sa_url)
    engine = create_engine(sa_url)
    orgs: dict[str, int] = {}
    try:
        with engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cur = raw.cursor()
            # the small organization first: every one of its rows is older than the big one's
            for name, n_jobs in (("old-small", 300), ("new-big", 3000)):
                cur.execute(
                    "INSERT INTO organizations (id, name, created_at) VALUES (%s, %s, now()) RETURNING pk",
                    (ids.org_id(), name),
                )
                org_pk = cur.fetchone()[0]
                orgs[name] = org_pk
                with cur.copy(
                    "COPY jobs (id, org_pk, model, training_file, seed, status, method, resolved_config,"
                    " metadata, result_files, created_at, attempt, pause_requested) FROM STDIN"
                ) as copy:
                    for i in range(n_jobs):
                        copy.write_row(
                            (
                                ids.job_id(),
                                org_pk,
                                "m",
                                "file-x",
                                i,
                                "succeeded",
                                "{}",
                                "{}",
                                json.dumps({"batch": str(i % 10)}),
                                "[]",
                                "2026-01-01",
                                1,
                                False,
                            )
                        )
                cur.execute("SELECT pk FROM jobs WHERE org_pk = %s ORDER BY pk", (org_pk,))
                pks = [r[0] for r in cur.fetchall()]
                with cur.copy(
                    "COPY job_events (id, job_pk, created_at, level, type, message) FROM STDIN"
                ) as copy:
                    for pk in pks:
                        for k in range(5):
                            copy.write_row((ids.event_id(), pk, "2026-01-01", "info", "message", f"e{k}"))
                orgs[f"{name}-job"] = pks[0]
            cur.execute("ANALYZE")
        yield engine, orgs
    finally:
        engine.dispose()
        drop()


def _plans(engine: Any, run: Any) -> list[str]:
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if "ORDER BY" in statement:
            captured.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with Session(engine) as session:
            run(session)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert captured
    with engine.connect() as conn:
        return [
            "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE) " + sql, params).all())
            for sql, params in captured
        ]


@pytest.mark.parametrize("org", ["old-small", "new-big"])
def test_job_and_event_lists_use_the_tenant_indexes(seeded, org):
    from app.pagination import paginate
    from core.db.models import Job, JobEvent

    engine, orgs = seeded
    org_pk, job_pk = orgs[org], orgs[f"{org}-job"]
    cases = {
        "ix_jobs_org_pk_pk": lambda s: paginate(
            s, select(Job), Job, within=(Job.org_pk, org_pk), after=None, limit=20
        ),
        "ix_job_events_job_pk_pk": lambda s: paginate(
            s, select(JobEvent), JobEvent, within=(JobEvent.job_pk, job_pk), after=None, limit=20
        ),
    }
    for index, run in cases.items():
        for plan in _plans(engine, run):
            assert f"using {index}" in plan, plan
            assert "using pk_" not in plan and "Seq Scan on jobs" not in plan, plan


def test_pages_hold_only_the_tenants_rows(seeded):
    from app.pagination import paginate
    from core.db.models import Job

    engine, orgs = seeded
    with Session(engine) as s:
        seen: list[str] = []
        after = None
        while True:
            rows, more = paginate(
                s, select(Job), Job, within=(Job.org_pk, orgs["old-small"]), after=after, limit=100
            )
            assert all(r.org_pk == orgs["old-small"] for r in rows)
            seen += [r.id for r in rows]
            if not more:
                break
            after = rows[-1].id
    assert len(seen) == len(set(seen)) == 300
