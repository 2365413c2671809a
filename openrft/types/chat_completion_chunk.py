from __future__ import annotations

from typing import Any, Literal

from openrft._models import BaseModel
from openrft.types.chat_completion import CompletionUsage

__all__ = ["ChatCompletionChunk", "ChoiceDelta", "ChunkChoice"]


class ChoiceDelta(BaseModel):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta = ChoiceDelta()
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice] = []
    usage: CompletionUsage | None = None
