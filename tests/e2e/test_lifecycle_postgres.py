"""Production topology on this machine: API and Celery workers as processes, PostgreSQL, Redis."""

from __future__ import annotations

import pytest

from tests.e2e.lifecycle import run_cancel, run_full_lifecycle, run_pause_resume, sdk

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("e2e-postgres")]


def test_full_lifecycle(pg_service):
    run_full_lifecycle(sdk(pg_service.base_url, pg_service.api_key))


def test_cancel_running_job(pg_service):
    run_cancel(sdk(pg_service.base_url, pg_service.api_key))


def test_pause_and_resume(pg_service):
    run_pause_resume(sdk(pg_service.base_url, pg_service.api_key))


def test_invalid_file_fails_like_openai(pg_service):
    import io

    client = sdk(pg_service.base_url, pg_service.api_key)
    bad = client.files.create(
        file=("bad.jsonl", io.BytesIO(b'{"messages": []}\nnot json\n')), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=bad.id,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": {
                    "type": "string_check",
                    "name": "g",
                    "input": "{{ sample.output_text }}",
                    "reference": "x",
                    "operation": "eq",
                }
            },
        },
    )
    from tests.e2e.lifecycle import TERMINAL, wait_status

    failed = wait_status(client, job.id, TERMINAL, 60)
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file" and failed.error.param == "training_file"
    assert "line 1" in failed.error.message and "line 2" in failed.error.message
