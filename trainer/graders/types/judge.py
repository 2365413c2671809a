"""What ``score_model`` and ``label_model`` share: the messages sent to the judge model, the node that sends
them, and ``JudgeType``, whose subclasses say what result to ask for and how it scores. The request and
finding the result in the answer are trainer.graders.model's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trainer.graders.errors import GraderValidationError, GradingError
from trainer.graders.fields import number, omit_not_null
from trainer.graders.node import Node, Outcome, Runtime, Scope
from trainer.graders.registry import GraderType
from trainer.graders.settings import GraderSettings
from trainer.graders.templates import check_template

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
SAMPLING_PARAMS = {
    "seed": int,
    "top_p": float,
    "temperature": float,
    "max_completions_tokens": int,
    "reasoning_effort": str,
}


class GraderMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=omit_not_null)

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | dict[str, Any] | list[dict[str, Any]] = Field(
        description="A template string, or input_text / output_text / input_image parts."
    )


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    max_completions_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: str | None = None


class JudgeType(GraderType):
    """A grader type whose score a judge model gives, as ``{"result": ...}``."""

    judge = True

    def instruction(self, spec: dict[str, Any]) -> str:
        """What the system prompt asks the model to answer (``GraderSettings.model_format_instruction``)."""
        raise NotImplementedError

    def result_schema(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The JSON Schema of the answer, for structured output."""
        raise NotImplementedError

    def score(self, spec: dict[str, Any], result: Any) -> float:
        """The score of the answer's ``result``; raises GradingError(model_grader_parse_error)."""
        raise NotImplementedError

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return ModelGraderNode(spec, settings, self)

    def templates(self, spec: dict[str, Any]) -> list[str]:
        return message_templates(spec["input"])


class ModelGraderNode(Node):
    def __init__(self, spec: dict[str, Any], settings: GraderSettings, judge: JudgeType) -> None:
        super().__init__(spec)
        self.settings = settings
        self.judge = judge

    async def _one(self, scope: Scope, rt: Runtime) -> Outcome:
        from trainer.graders import model

        try:
            body = model.build_request(
                self.spec,
                scope,
                self.settings,
                instruction=self.judge.instruction(self.spec),
                result_schema=self.judge.result_schema(self.spec),
            )
            async with rt.model_sem:
                data = await model.chat_completion(rt.client(), self.spec, body, self.settings)
        except GradingError as exc:
            return Outcome.failed(exc)
        name = str(data.get("model") or self.spec["model"])
        usage = {name: model.usage_of(data)}
        try:
            score = self.judge.score(self.spec, model.result_from(data))
        except GradingError as exc:
            return Outcome(0.0, [(exc.key, exc.detail)], usage=usage, sampled_model=name)
        return Outcome(score, usage=usage, sampled_model=name)

    async def _grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._one(s, rt) for s in scopes)))


def check_model_and_messages(out: dict[str, Any], param: str) -> None:
    if not isinstance(out["model"], str) or not out["model"]:
        raise GraderValidationError(f"{param}.model", "must be a non-empty string")
    _messages(out["input"], f"{param}.input")


def _messages(value: Any, param: str) -> None:
    if not isinstance(value, list) or not value:
        raise GraderValidationError(param, "must be a non-empty list of messages")
    for i, msg in enumerate(value):
        p = f"{param}[{i}]"
        if not isinstance(msg, dict):
            raise GraderValidationError(p, "must be an object with role and content")
        for key in msg:
            if key not in ("role", "content", "type"):
                raise GraderValidationError(f"{p}.{key}", "unknown field for a message")
        if msg.get("role") not in MESSAGE_ROLES:
            raise GraderValidationError(f"{p}.role", f"must be one of {', '.join(MESSAGE_ROLES)}")
        if msg.get("type", "message") != "message":
            raise GraderValidationError(f"{p}.type", "must be 'message'")
        if "content" not in msg:
            raise GraderValidationError(f"{p}.content", "is required")
        content = msg["content"]
        parts = content if isinstance(content, list) else [content]
        for j, part in enumerate(parts):
            _content_part(part, f"{p}.content[{j}]" if isinstance(content, list) else f"{p}.content")


def _content_part(part: Any, param: str) -> None:
    if isinstance(part, str):
        check_template(part, param)
        return
    if not isinstance(part, dict):
        raise GraderValidationError(param, "must be a string or a content object")
    ptype = part.get("type")
    if ptype in ("input_text", "output_text"):
        check_template(part.get("text"), f"{param}.text")
    elif ptype == "input_image":
        check_template(part.get("image_url"), f"{param}.image_url")
    elif ptype == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise GraderValidationError(f"{param}.input_audio", "must be an object with data and format")
    else:
        raise GraderValidationError(
            f"{param}.type", "must be one of input_text, output_text, input_image, input_audio"
        )


def check_sampling_params(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise GraderValidationError(param, "must be an object")
    for key, val in value.items():
        want = SAMPLING_PARAMS.get(key)
        if want is None:
            raise GraderValidationError(f"{param}.{key}", f"unknown; allowed: {', '.join(SAMPLING_PARAMS)}")
        if val is None:
            continue
        if want is float:
            number(val, f"{param}.{key}")
        elif want is int and (isinstance(val, bool) or not isinstance(val, int)):
            raise GraderValidationError(f"{param}.{key}", "must be an integer")
        elif want is str and not isinstance(val, str):
            raise GraderValidationError(f"{param}.{key}", "must be a string")
    max_tokens = value.get("max_completions_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise GraderValidationError(f"{param}.max_completions_tokens", "must be at least 1")


def message_templates(messages: list[dict[str, Any]]) -> list[str]:
    """The templates of validated messages: string contents, text parts and image URLs."""
    out: list[str] = []
    for msg in messages:
        content = msg["content"]
        for part in content if isinstance(content, list) else [content]:
            if isinstance(part, str):
                out.append(part)
            elif part.get("type") in ("input_text", "output_text"):
                out.append(part["text"])
            elif part.get("type") == "input_image":
                out.append(part["image_url"])
    return out
