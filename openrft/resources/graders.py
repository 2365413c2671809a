"""``client.graders`` (also at ``client.fine_tuning.alpha.graders``, OpenAI's path): run a grader on one
sample, or validate a grader spec."""

# ruff: noqa: ASYNC109  (a per-call HTTP timeout, like openai-python; not an asyncio deadline)

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openrft._base_client import NOT_GIVEN, NotGiven, Timeout
from openrft._resource import AsyncResource, SyncResource
from openrft.types.grader_run_response import GraderRunResponse
from openrft.types.grader_validate_response import GraderValidateResponse

__all__ = ["AsyncGraders", "Graders"]

_PATH = "/fine_tuning/alpha/graders"


def _run_body(grader: Mapping[str, Any], model_sample: str, item: Mapping[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"grader": dict(grader), "model_sample": model_sample}
    if item is not None:
        body["item"] = dict(item)
    return body


class Graders(SyncResource):
    def run(
        self,
        *,
        grader: Mapping[str, Any],
        model_sample: str,
        item: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> GraderRunResponse:
        """Score ``model_sample`` (the model's output text; JSON text also fills ``sample.output_json``)
        against ``item`` (a training row, available as ``{{ item.* }}``)."""
        return self._client.post(
            f"{_PATH}/run", GraderRunResponse, body=_run_body(grader, model_sample, item), timeout=timeout
        )

    def validate(
        self, *, grader: Mapping[str, Any], timeout: Timeout | NotGiven = NOT_GIVEN
    ) -> GraderValidateResponse:
        return self._client.post(
            f"{_PATH}/validate", GraderValidateResponse, body={"grader": dict(grader)}, timeout=timeout
        )


class AsyncGraders(AsyncResource):
    async def run(
        self,
        *,
        grader: Mapping[str, Any],
        model_sample: str,
        item: Mapping[str, Any] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
    ) -> GraderRunResponse:
        return await self._client.post(
            f"{_PATH}/run", GraderRunResponse, body=_run_body(grader, model_sample, item), timeout=timeout
        )

    async def validate(
        self, *, grader: Mapping[str, Any], timeout: Timeout | NotGiven = NOT_GIVEN
    ) -> GraderValidateResponse:
        return await self._client.post(
            f"{_PATH}/validate", GraderValidateResponse, body={"grader": dict(grader)}, timeout=timeout
        )
