"""The async twin against the live service: same resources, async paginators, errors, wait and follow."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable

import pytest
from rich.console import Console

from openrft import AsyncOpenRFT, AsyncPaginator, BadRequestError, FileValidationError, NotFoundError
from openrft.types import FineTuningJobEvent
from tests.support import STRING_CHECK_GRADER, arithmetic_rows


def _rows(n: int) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in arithmetic_rows(n)).encode()


def test_async_files_jobs_models_graders(make_async: Callable[[], AsyncOpenRFT]) -> None:
    tag = uuid.uuid4().hex

    async def run() -> None:
        async with make_async() as client:
            f = await client.files.create(_rows(3), filename="a.jsonl", validate="reinforcement")
            await client.files.create(_rows(1), filename="b.jsonl")
            assert (await client.files.retrieve(f.id)).filename == "a.jsonl"
            assert (await client.files.content(f.id)).content == _rows(3)
            with pytest.raises(FileValidationError):
                await client.files.create(b"[1]\n", validate="reinforcement")

            paginator = client.files.list(limit=1)
            assert isinstance(paginator, AsyncPaginator)
            first = await paginator
            assert len(first.data) == 1 and first.has_more
            assert f.id in [x.id async for x in client.files.list(limit=1)]

            jobs = [
                await client.fine_tuning.jobs.create(
                    model="tiny-test", training_file=f.id, grader=STRING_CHECK_GRADER, metadata={"tag": tag}
                )
                for _ in range(2)
            ]
            for job in jobs:
                assert (await client.fine_tuning.jobs.cancel(job.id)).status == "cancelled"
            listed = [j.id async for j in client.fine_tuning.jobs.list(limit=1, metadata={"tag": tag})]
            assert listed == [j.id for j in reversed(jobs)]
            got = await client.fine_tuning.jobs.wait(jobs[0].id, poll_interval=0.1, timeout=5)
            assert got.status == "cancelled"
            with pytest.raises(BadRequestError) as info:
                await client.fine_tuning.jobs.resume(jobs[0].id)
            assert info.value.code == "invalid_job_state"
            events = [e.message async for e in client.fine_tuning.jobs.list_events(jobs[0].id, limit=1)]
            assert events[0] == "Job cancelled by the user." and events[-1].startswith(
                "Created fine-tuning job"
            )
            assert [c async for c in client.fine_tuning.jobs.checkpoints.list(jobs[0].id)] == []

            out = io.StringIO()
            seen: list[FineTuningJobEvent] = []
            followed = await client.fine_tuning.jobs.follow(
                jobs[1].id, console=Console(file=out, width=160), on_event=seen.append, poll_interval=0.1
            )
            assert (
                followed.status == "cancelled"
                and [e.message for e in seen][-1] == "Job cancelled by the user."
            )
            assert "Job cancelled by the user." in out.getvalue()

            models = [m.id async for m in client.models.list()]
            assert "tiny-test" in models and "smollm2-135m-instruct" in models
            assert (await client.models.retrieve("tiny-test")).owned_by == "openrft"
            with pytest.raises(NotFoundError):
                await client.models.delete("ft:tiny-test:nobody::ftjob-x")

            run_result = await client.graders.run(
                grader=STRING_CHECK_GRADER, model_sample="7", item={"answer": "7"}
            )
            assert run_result.reward == 1.0
            alpha = await client.fine_tuning.alpha.graders.run(
                grader=STRING_CHECK_GRADER, model_sample="8", item={"answer": "7"}
            )
            assert alpha.reward == 0.0
            validated = await client.graders.validate(grader={"type": "multiple_choice"})
            assert validated.to_dict()["grader"]["reference"] == "{{ item.answer }}"

    asyncio.run(run())
