"""A live embedded service (`openrft serve`: API, workers, SQLite, the tiny model) shared by the client and
CLI tests, and clients pointed at it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openrft import AsyncOpenRFT, OpenRFT
from tests.support import LiveService, service_env


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[LiveService]:
    home = tmp_path_factory.mktemp("client-home")
    svc = LiveService(home=home, env={})
    svc.env = service_env(
        home,
        database_url=None,
        redis_url=None,
        api_key=svc.api_key,
        extra={"OPENRFT_BASE_MODELS": json.dumps({"tiny-test": str(tiny_model_dir)})},
    )
    try:
        svc.start_api(embedded=True)
        yield svc
    except BaseException:
        print(svc.logs())
        raise
    finally:
        stop_serve(svc)


def stop_serve(svc: LiveService) -> None:
    """Stop `openrft serve` the way Ctrl+C does, so it stops the workers it spawned."""
    import signal

    for p in svc.procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    svc.stop()


@pytest.fixture
def client(live: LiveService) -> Iterator[OpenRFT]:
    with OpenRFT(api_key=live.api_key, base_url=live.base_url, max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture
def make_async(live: LiveService) -> Callable[[], AsyncOpenRFT]:
    def make() -> AsyncOpenRFT:
        return AsyncOpenRFT(api_key=live.api_key, base_url=live.base_url, max_retries=0, timeout=60)

    return make
