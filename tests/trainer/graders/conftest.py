from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.trainer.graders.servers import Recorder, scripted_judge, serve
from trainer.graders import GraderSettings


@pytest.fixture
def settings() -> GraderSettings:
    """Short limits so attack tests finish quickly; loopback endpoints allowed for the local servers."""
    return GraderSettings(
        python_timeout_s=3,
        sandbox_cpu_s=2,
        sandbox_memory_mb=512,
        sandbox_tmp_mb=16,
        model_retries=2,
        endpoint_allow_private_networks=True,
    )


@pytest.fixture(scope="module")
def judge() -> Iterator[tuple[str, Recorder]]:
    with serve(scripted_judge) as (url, rec):
        yield url + "/v1", rec
