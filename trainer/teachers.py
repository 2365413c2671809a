"""Who writes synthesized traces, paraphrases and verifier judgements: the policy itself or an
OpenAI-compatible endpoint (a stronger model behind vLLM, a hosted API)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from trainer.chat_client import ChatClient, ChatError
from trainer.generation import GenerationStats, Messages, generate
from trainer.interface import TrainerError

if TYPE_CHECKING:
    from trainer.config import Endpoint
    from trainer.control import Stopper


class Teacher(Protocol):
    name: str

    def sample(
        self, conversations: list[Messages], *, n: int, temperature: float, max_new_tokens: int
    ) -> list[list[str]]:
        """``n`` completions per conversation."""


class PolicyTeacher:
    """The model being trained (or its base), sampled with transformers."""

    name = "policy"

    def __init__(self, model: Any, tokenizer: Any, *, stopper: Stopper | None, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stopper = stopper
        self.batch_size = batch_size
        self.stats = GenerationStats()

    def sample(
        self, conversations: list[Messages], *, n: int, temperature: float, max_new_tokens: int
    ) -> list[list[str]]:
        return generate(
            self.model,
            self.tokenizer,
            conversations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            num_samples=n,
            batch_size=self.batch_size,
            stopper=self.stopper,
            stats=self.stats,
        )


class EndpointTeacher:
    """Chat completions against ``{base_url}/chat/completions``, a few requests in flight at a time."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        stopper: Stopper | None,
        concurrency: int = 8,
        transport: Any = None,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.allowed_hosts = allowed_hosts
        self.name = f"{endpoint.model} at {endpoint.base_url}"
        self.stopper = stopper
        self.concurrency = concurrency

    def _one(
        self, client: ChatClient, messages: Messages, n: int, temperature: float, max_tokens: int
    ) -> list[str]:
        body = {"model": self.endpoint.model, "messages": messages, "n": n, "temperature": temperature}
        body["max_tokens"] = max_tokens
        try:
            data = client.create(body)
        except ChatError as e:
            raise TrainerError(
                f"Teacher endpoint {self.endpoint.base_url} failed: {e}",
                code="teacher_error",
                param="openrft",
            ) from None
        choices = data.get("choices") or []
        return [str((c.get("message") or {}).get("content") or "") for c in choices][:n] or [""]

    def sample(
        self, conversations: list[Messages], *, n: int, temperature: float, max_new_tokens: int
    ) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in conversations]
        with (
            ChatClient.for_user_url(
                self.endpoint.base_url,
                api_key=self.endpoint.api_key,
                timeout=self.endpoint.timeout,
                transport=self.transport,
                allowed_hosts=self.allowed_hosts,
            ) as client,
            concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool,
        ):
            futs = {
                pool.submit(self._one, client, c, n, temperature, max_new_tokens): i
                for i, c in enumerate(conversations)
            }
            for fut in concurrent.futures.as_completed(futs):
                if self.stopper is not None:
                    stop = self.stopper.requested(budget=False)
                    if stop is not None:
                        for f in futs:
                            f.cancel()
                        raise stop
                got = fut.result()
                # Some servers ignore n > 1: top up with single requests.
                while len(got) < n:
                    got += self._one(client, conversations[futs[fut]], 1, temperature, max_new_tokens)
                out[futs[fut]] = got[:n]
        return out


def make_teacher(
    spec: Any, *, model: Any, tokenizer: Any, stopper: Stopper | None, allowed_hosts: Sequence[str] = ()
) -> Teacher:
    """The policy itself, or a user's endpoint (public addresses only, but for the operator's ``allowed_hosts``)."""
    if spec == "policy":
        return PolicyTeacher(model, tokenizer, stopper=stopper)
    return EndpointTeacher(spec, stopper=stopper, allowed_hosts=allowed_hosts)
