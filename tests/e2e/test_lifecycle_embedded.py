"""The embedded default (`openrft serve`): SQLite, the filesystem broker, workers spawned by the command."""

from __future__ import annotations

import pytest

from tests.e2e.lifecycle import run_cancel, run_full_lifecycle, run_pause_resume, sdk

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_full_lifecycle_embedded(embedded_service):
    run_full_lifecycle(sdk(embedded_service.base_url, embedded_service.api_key))


def test_cancel_running_job_embedded(embedded_service):
    run_cancel(sdk(embedded_service.base_url, embedded_service.api_key))


def test_pause_and_resume_embedded(embedded_service):
    run_pause_resume(sdk(embedded_service.base_url, embedded_service.api_key))
