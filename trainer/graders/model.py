"""``score_model`` and ``label_model``: ask an OpenAI-compatible chat endpoint for ``{"result": ...}``.

What result each type asks for and how it scores it is the type's (trainer.graders.types.score_model,
label_model); this module sends the request and finds the result in the answer.

The endpoint is the deployment's default (``GraderSettings.base_url``) or a per-model override, so a grader
can use a hosted model or one this service serves. The request asks for structured output (configurable),
and the answer is parsed leniently: the whole content as JSON, else the last JSON object in it that has a
``result`` (small local models wrap JSON in prose or code fences).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from trainer.chat_client import AsyncChatClient, ChatError
from trainer.graders.errors import GradingError
from trainer.graders.settings import GraderSettings
from trainer.graders.templates import Template

_MAX_CONTENT = 200_000


def _render_part(part: Any, scope: dict[str, Any]) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": Template.parse(part).render(scope)}
    ptype = part["type"]
    if ptype in ("input_text", "output_text"):
        return {"type": "text", "text": Template.parse(part["text"]).render(scope)}
    if ptype == "input_image":
        image: dict[str, Any] = {"url": Template.parse(part["image_url"]).render(scope)}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    return {"type": "input_audio", "input_audio": part["input_audio"]}


def render_messages(messages: list[dict[str, Any]], scope: dict[str, Any]) -> list[dict[str, Any]]:
    """The grader's ``input`` as chat-completions messages, templates filled in."""
    out = []
    for msg in messages:
        content = msg["content"]
        parts = [_render_part(p, scope) for p in (content if isinstance(content, list) else [content])]
        if all(p["type"] == "text" for p in parts):
            rendered: Any = "\n".join(p["text"] for p in parts)
        else:
            rendered = parts
        # "developer" is the newer name of "system"; many OpenAI-compatible servers know only "system".
        role = "system" if msg["role"] == "developer" else msg["role"]
        out.append({"role": role, "content": rendered})
    return out


def response_format(result_schema: dict[str, Any], mode: str) -> dict[str, Any] | None:
    """The ``response_format`` asking for an answer of ``result_schema`` (the grader type's), per ``mode``."""
    if mode == "none":
        return None
    if mode == "json_object":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": "grader_result", "strict": True, "schema": result_schema},
    }


def build_request(
    spec: dict[str, Any],
    scope: dict[str, Any],
    settings: GraderSettings,
    *,
    instruction: str,
    result_schema: dict[str, Any],
) -> dict[str, Any]:
    """The chat-completions body for one sample (raises GradingError on a missing template variable).
    ``instruction`` and ``result_schema`` say what the grader type wants answered."""
    messages = render_messages(spec["input"], scope)
    if settings.model_format_instruction:
        if messages and messages[0]["role"] == "system" and isinstance(messages[0]["content"], str):
            messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + instruction}
        else:
            messages.insert(0, {"role": "system", "content": instruction})
    body: dict[str, Any] = {"model": spec["model"], "messages": messages}
    for key, value in (spec.get("sampling_params") or {}).items():
        if value is not None:
            body["max_completion_tokens" if key == "max_completions_tokens" else key] = value
    fmt = response_format(result_schema, settings.model_response_format)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def endpoint_for(model: str, settings: GraderSettings) -> tuple[str, str | None, str]:
    """(base_url, api_key, model name to send) for a grader's ``model``."""
    override = settings.models.get(model)
    if override is not None:
        return override.base_url, override.api_key, override.model or model
    if not settings.base_url:
        raise GradingError(
            "model_grader_server_error",
            f"no endpoint is configured for grader model {model!r} (GraderSettings.base_url or models)",
        )
    return settings.base_url, settings.api_key, model


async def chat_completion(
    client: httpx.AsyncClient, spec: dict[str, Any], body: dict[str, Any], settings: GraderSettings
) -> dict[str, Any]:
    """POST through the shared retrying chat client (over the engine's connection pool); returns the decoded
    response. Failures after the retries are ``model_grader_server_error``."""
    base_url, api_key, model = endpoint_for(spec["model"], settings)
    chat = AsyncChatClient(
        base_url,
        api_key=api_key,
        timeout=settings.model_timeout_s,
        retries=settings.model_retries,
        http=client,
    )
    body = {**body, "model": model}
    try:
        try:
            return await chat.create(body)
        except ChatError as exc:
            if exc.status != 400 or "response_format" not in body:
                raise
        # Servers without structured outputs reject the field: ask again with the prompt only.
        return await chat.create({k: v for k, v in body.items() if k != "response_format"})
    except ChatError as exc:
        raise GradingError("model_grader_server_error", str(exc)) from None


def usage_of(data: dict[str, Any]) -> dict[str, int]:
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
        "cached_tokens": int(details.get("cached_tokens") or 0),
    }


def find_result(content: str) -> Any:
    """The ``result`` of the JSON answer in ``content``; raises GradingError(model_grader_parse_error)."""
    text = content.strip()[:_MAX_CONTENT]
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and "result" in obj:
            return obj["result"]
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    found: Any = None
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict) and "result" in obj:
            found = obj  # keep the last one: models restate their final answer at the end
        pos = text.find("{", end)
    if found is None:
        raise GradingError("model_grader_parse_error", f"no JSON object with 'result' in: {text[:300]!r}")
    return found["result"]


def result_from(data: dict[str, Any]) -> Any:
    """The ``result`` a chat completion answered (the grader type turns it into a score); raises GradingError
    on a refusal or an answer without one."""
    choices = data.get("choices") or []
    message = (choices[0] or {}).get("message") or {} if choices else {}
    if message.get("refusal"):
        raise GradingError("model_grader_refusal_error", str(message["refusal"])[:500])
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise GradingError("model_grader_parse_error", "the grader model returned no content")
    return find_result(content)
