"""The live embedded service (`openrft serve`: API, workers, SQLite, the tiny model; tests/conftest.py's
``embedded_service``, shared with the end-to-end tests) and clients pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from openrft import AsyncOpenRFT, OpenRFT
from tests.support import LiveService


@pytest.fixture(scope="session")
def live(embedded_service: LiveService) -> LiveService:
    return embedded_service


@pytest.fixture
def client(live: LiveService) -> Iterator[OpenRFT]:
    with OpenRFT(api_key=live.api_key, base_url=live.base_url, max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture
def make_async(live: LiveService) -> Callable[[], AsyncOpenRFT]:
    def make() -> AsyncOpenRFT:
        return AsyncOpenRFT(api_key=live.api_key, base_url=live.base_url, max_retries=0, timeout=60)

    return make
