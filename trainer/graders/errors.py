"""Grader errors: the validation error raised on a bad spec, and OpenAI's per-sample error keys."""

from __future__ import annotations

from typing import Final

#: The boolean keys of ``metadata.errors`` in OpenAI's graders/run response, in the contract's order.
ERROR_KEYS: Final[tuple[str, ...]] = (
    "formula_parse_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
    "invalid_variable_error",
    "other_error",
    "python_grader_server_error",
    "python_grader_runtime_error",
    "model_grader_server_error",
    "model_grader_refusal_error",
    "model_grader_parse_error",
)

#: The free-text companions of some keys (None when the key is false).
DETAIL_KEYS: Final[dict[str, str]] = {
    "python_grader_runtime_error": "python_grader_runtime_error_details",
    "python_grader_server_error": "python_grader_server_error_type",
    "model_grader_server_error": "model_grader_server_error_details",
}


class GraderValidationError(ValueError):
    """A grader spec is invalid. ``param`` is the dotted path of the bad field, e.g. ``grader.operation``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class GradingError(Exception):
    """A per-sample failure that scores 0 and is counted under one of :data:`ERROR_KEYS`."""

    def __init__(self, key: str, detail: str) -> None:
        assert key in ERROR_KEYS, key
        super().__init__(detail)
        self.key = key
        self.detail = detail
