"""One retrying client for OpenAI-compatible ``/chat/completions``, used by every remote model the trainer
calls: teachers (paraphrases, reasoning traces), the process reward judge and the model graders.

Connection errors, timeouts and HTTP 408/409/429/5xx are retried with exponential back-off, or after the
server's ``Retry-After`` when it sends one; any other status fails at once (a bad key or a bad request does
not get better by asking again). Every failure is one :class:`ChatError` with the status and the upstream
error message, which each caller maps to its own error (a teacher error, a grader error key, a PRM count).
``ChatClient`` serves threads, ``AsyncChatClient`` an event loop (it can share the caller's connection pool);
both take an ``httpx`` transport for tests and an injectable ``sleep``.

A user's own endpoint (a teacher, a process reward judge) is untrusted: :meth:`ChatClient.for_user_url` reaches
public addresses only (trainer.public_urls) and its errors carry the status and an OpenAI-shaped error's
message, never a raw body (what some other service answered must not reach a job's error).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypedDict, Unpack

import httpx
import tenacity

RETRY_STATUS = frozenset({408, 409, 429})
"""Besides every 5xx: the statuses worth asking again (what OpenAI's SDK retries)."""
MAX_WAIT_S = 30.0
"""The longest wait between tries, whether from back-off or from a server's Retry-After."""
LOADING_WAIT_S = 600.0
"""How long a server that answers 503 ``model_loading`` (an engine starting: this service's own, or vLLM's) is
waited for; those answers do not use up the retries. A first large model takes minutes to load."""
_RETRY_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)


class ChatError(Exception):
    """A chat request that failed for good: ``status`` is the HTTP status (None when no response came
    back), ``message`` the upstream's error message (or the network error), ``attempts`` the tries made."""

    def __init__(
        self,
        url: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        loading: bool = False,
    ) -> None:
        super().__init__(message)
        self.loading = loading
        """The server said the model is still loading (503 ``model_loading``): worth waiting for."""
        self.url = url
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        where = f"HTTP {self.status} from {self.url}" if self.status is not None else self.url
        tries = f" (after {self.attempts} tries)" if self.attempts > 1 else ""
        return f"{where}: {self.message}{tries}"


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms`` (OpenAI's), else ``retry-after`` in seconds
    or as an HTTP date; None when it says nothing usable."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def error_code(resp: httpx.Response) -> str | None:
    """The ``error.code`` of an OpenAI-shaped error body, if any."""
    try:
        data = resp.json()
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) else None


def upstream_message(resp: httpx.Response) -> str:
    """The error message of a failed response: OpenAI's ``{"error": {"message", "code"}}`` (its code in front:
    what a user searches for), FastAPI's ``{"detail"}``, else the start of the body."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        code = err.get("code") if isinstance(err, dict) else None
        for found in (err.get("message") if isinstance(err, dict) else err, data.get("detail")):
            if found:
                return (f"{code}: " if code else "") + str(found)[:500]
    return resp.text[:500] or resp.reason_phrase


def openai_error_message(resp: httpx.Response) -> str:
    """What an untrusted upstream may tell a user: the message of an OpenAI-shaped error body (``{"error":
    {"message", "code"}}``, what a model server answers: a bad key, too many tokens), cut short; anything else,
    the status's reason only. A raw body is never quoted: a URL that reached some other service must not
    relay its answer."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]:
        code = err.get("code")
        return (f"{code}: " if isinstance(code, str) else "") + err["message"][:200]
    return resp.reason_phrase


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ChatError) and exc.retryable


class Options(TypedDict, total=False):
    """The endpoint options both clients take (defaults in :class:`_Endpoint`)."""

    api_key: str | None
    timeout: float
    """Seconds per try."""
    retries: int
    """Tries after the first; 0 sends once."""
    backoff_s: float
    """The first wait; each retry doubles it (up to MAX_WAIT_S)."""
    echo_body: bool
    """Errors quote what the upstream answered (False for a user's URL: an OpenAI-shaped error message only)."""


class _Endpoint:
    """What the sync and async clients share: the URL, the headers and the retry policy."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        echo_body: bool = True,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.echo_body = echo_body
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ChatError) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_WAIT_S)
        return min(self.backoff_s * 2 ** (state.attempt_number - 1), MAX_WAIT_S)

    def _policy(self) -> dict[str, Any]:
        loading = 0

        def stop(state: tenacity.RetryCallState) -> bool:
            nonlocal loading
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, ChatError) and exc.loading:
                loading += 1
                return state.idle_for >= LOADING_WAIT_S
            return state.attempt_number - loading >= self.retries + 1

        return {
            "stop": stop,
            "wait": self._wait,
            "retry": tenacity.retry_if_exception(_retryable),
            "reraise": True,
        }

    def _failed(self, exc: httpx.HTTPError) -> ChatError:
        return ChatError(
            self.url, f"{type(exc).__name__}: {exc}", retryable=isinstance(exc, _RETRY_TRANSPORT)
        )

    def _result(self, resp: httpx.Response) -> dict[str, Any]:
        status = resp.status_code
        if status >= 400:
            code = error_code(resp)
            raise ChatError(
                self.url,
                upstream_message(resp) if self.echo_body else openai_error_message(resp),
                status=status,
                retryable=status in RETRY_STATUS or status >= 500,
                retry_after=retry_after(resp.headers),
                loading=status == 503 and code == "model_loading",
            )
        shown = f": {resp.text[:200]!r}" if self.echo_body else ""
        try:
            data = resp.json()
        except ValueError:
            raise ChatError(self.url, f"the response is not JSON{shown}", status=status) from None
        if not isinstance(data, dict):
            raise ChatError(self.url, f"the response is not a JSON object{shown}", status=status)
        return data


class ChatClient(_Endpoint):
    """Blocking client, safe to share between threads; use it as a context manager (or ``close()`` it)."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(base_url, **options)
        self._http = httpx.Client(transport=transport)
        self._sleep = sleep

    @classmethod
    def for_user_url(
        cls,
        base_url: str,
        *,
        allowed_hosts: Collection[str] = (),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **options: Unpack[Options],
    ) -> ChatClient:
        """A client for a URL a user gave: public addresses only (unless the operator listed the host), no
        upstream body in its errors. ``transport`` replaces the checked one in tests."""
        from trainer.public_urls import PublicTransport

        options["echo_body"] = False
        return cls(
            base_url,
            transport=transport or PublicTransport(allowed_hosts),
            sleep=sleep,
            **options,
        )

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the decoded completion; raises :class:`ChatError`."""
        retrying = tenacity.Retrying(sleep=self._sleep, **self._policy())
        try:
            return retrying(self._once, body)
        except ChatError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise

    def _once(self, body: dict[str, Any]) -> dict[str, Any]:
        from trainer.public_urls import PrivateAddressError

        try:
            resp = self._http.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise self._failed(exc) from exc
        except PrivateAddressError as exc:
            raise ChatError(self.url, str(exc)) from None
        return self._result(resp)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncChatClient(_Endpoint):
    """Client for an event loop. Given ``http``, requests go through that client's connection pool (which
    its owner closes); otherwise it owns one (``aclose()`` it)."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(base_url, **options)
        self._owned = http is None
        self._http = http if http is not None else httpx.AsyncClient(transport=transport)
        self._sleep = sleep

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the decoded completion; raises :class:`ChatError`."""
        retrying = tenacity.AsyncRetrying(sleep=self._sleep, **self._policy())
        try:
            return await retrying(self._once, body)
        except ChatError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise

    async def _once(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._http.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise self._failed(exc) from exc
        return self._result(resp)

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()
