"""Test-wide set-up: every test session gets its own OPENRFT_HOME and SQLite database, so nothing touches
the user's ~/.openrft, and the process never reaches a model hub.

How the suite runs in parallel. `make test` runs ``pytest -n auto --dist loadgroup`` (pytest-xdist): one worker
process per core, each a session of its own (its own OPENRFT_HOME, SQLite database, tiny model and session
fixtures). Tests are handed out one at a time to whichever worker is free, so a new test needs nothing to run in
parallel, only these rules:

- Nothing machine-wide is fixed: ports come from ``tests.support.free_port()``, PostgreSQL databases from
  ``create_database()`` (or the ``postgres_url`` fixture), Redis from a ``PrivateRedis`` server
  (``tests.reliability.servers``; never a db number or bare keys on the shared 127.0.0.1:6379), files under
  ``tmp_path``. A test that looks at processes looks at its own children (by pid), never by name.
- A live service costs ~15 s to start: use a shared one, ``embedded_service`` (``openrft serve`` on SQLite,
  below) or tests/reliability's ``shared_service`` (PostgreSQL, Redis, API and Celery workers), unless the
  test kills, stops or reconfigures its processes.
- Tests that must run on one worker, in order (they share a module-scoped service or an expensive module
  fixture, or must not run beside each other), carry ``pytest.mark.xdist_group("name")``; a module-wide
  ``pytestmark`` does it for a whole module. The group's tests then run on one worker, one after another.
- Modules with a ``slow`` test are collected first, so the long tests start early and the short ones fill the
  gaps at the end. ``make test TEST_WORKERS=0`` (or plain ``pytest``) runs everything in one process.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from tests.support import LiveService

_HOME = Path(tempfile.mkdtemp(prefix="openrft-test-home-"))


def pytest_configure(config: pytest.Config) -> None:
    os.environ["OPENRFT_HOME"] = str(_HOME)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("OPENRFT_BOOTSTRAP_API_KEY", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # torch's intra-op threads, one per core by default, in every worker and every process a test starts:
        # with more threads than cores each op waits for a descheduled peer (measured here: a 16x32-token
        # generate took 30 s with 2 threads on a busy 2-core machine, 14 s with 1). Split the cores instead.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which tags a group's tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with a slow test first (each module's tests stay together and in order): with workers, the
    longest work starts first. The order is the same in every worker, as xdist requires."""
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)
    if getattr(config.option, "loadgroup", False):
        _tag_xdist_groups(items)


def _tag_xdist_groups(items: list[pytest.Item]) -> None:
    """``--dist loadgroup`` finds a test's group in a ``@name`` suffix of its node id, which pytest-xdist 3.8
    writes to ``item._nodeid``; pytest 9.2 reads the id from ``item._id`` instead, so the suffix is lost and a
    group's tests are spread over the workers (pytest-xdist issue 1386). Write it where pytest reads it."""
    try:
        from _pytest.nodeid import coerce_node_id  # pytest >= 9.2; before it, xdist's own suffix works
    except ImportError:
        return
    for item in items:
        names = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
        if names and "@" not in item.nodeid.rpartition("]")[2]:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(sorted(names))}")  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A module that leaves an event loop marked running in this thread (Playwright's sync API does while it is
    open) breaks every later asyncio.run() on the same worker ("cannot be called from a running event loop"):
    fail the module's last test, and clear the mark."""
    result = yield
    if nextitem is None or nextitem.path != item.path:
        import asyncio

        loop = asyncio._get_running_loop()
        if loop is not None:
            asyncio._set_running_loop(None)
            raise RuntimeError(f"{item.path.name} left an event loop running in the main thread: {loop!r}")
    return result


@pytest.fixture(scope="session")
def test_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def app_settings(test_home: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    """The session's settings, prepared (migrated). Defined once, here: a second definition (a conftest importing
    it) would clear get_settings' cache again and leave the tests holding the first a stale object."""
    from app.bootstrap import prepare
    from core.settings import get_settings

    os.environ["OPENRFT_BASE_MODELS"] = json.dumps({"tiny-test": str(tiny_model_dir)})
    get_settings.cache_clear()
    settings = get_settings()
    prepare(settings, generate_key=False)
    return settings


@pytest.fixture(scope="session")
def client(app_settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def key(app_settings) -> str:  # type: ignore[no-untyped-def]
    """A fresh organization per test: tests never see each other's objects."""
    from tests.app.conftest import make_key

    return make_key()


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama + tokenizer built locally (no downloads), built once per run: the parallel workers share it
    (the first builds it under a file lock) and read it only."""
    from filelock import FileLock

    from tests.support.tiny import build_tiny_model

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    out, done = root / "tiny-model", root / "tiny-model.built"
    with FileLock(str(root / "tiny-model.lock")):
        if not done.exists():
            build_tiny_model(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[LiveService]:
    """`openrft serve` as a user starts it (SQLite, the filesystem broker, the workers the command spawns), the
    tiny model as ``tiny-test``: one per worker, shared by the client, CLI and end-to-end tests. Tests on it make
    their own files and jobs (a unique metadata tag where they list), leave no job running, never stop it."""
    from tests.support import LiveService, service_env

    home = tmp_path_factory.mktemp("embedded-home")
    svc = LiveService(home=home, env={})
    svc.env = service_env(
        home, database_url=None, redis_url=None, api_key=svc.api_key,
        extra={
            "OPENRFT_BASE_MODELS": json.dumps({"tiny-test": str(tiny_model_dir)}),
            "OPENRFT_JOB_LEASE_SECONDS": "20",
        },
    )  # fmt: skip
    try:
        svc.start_api(embedded=True)
        yield svc
    except BaseException:
        print(svc.logs())
        raise
    finally:
        for p in svc.procs:  # the way Ctrl+C stops it: `openrft serve` stops the workers it spawned
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        svc.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (a SQLAlchemy URL), dropped after it."""
    from tests.support import create_database

    url, drop = create_database("openrft_t")
    try:
        yield url.replace("postgresql://", "postgresql+psycopg://")
    finally:
        drop()
