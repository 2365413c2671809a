"""The embedded default (`openrft serve`): SQLite, the filesystem broker, workers spawned by the command."""

from __future__ import annotations

import pytest

from tests.e2e.lifecycle import run_full_lifecycle, sdk

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_full_lifecycle_embedded(embedded_service):
    run_full_lifecycle(sdk(embedded_service.base_url, embedded_service.api_key))
