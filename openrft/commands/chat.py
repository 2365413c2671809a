"""``openrft chat MODEL``: one message with ``-m``, or an interactive conversation; replies stream in."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from openai import omit

from openrft import OpenRFT
from openrft._model_loading import retry_while_loading
from openrft.commands.common import connection_options, err, make_client

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

EXIT_WORDS = frozenset({"exit", "quit", "/exit", "/quit"})


def _reply(client: OpenRFT, args: argparse.Namespace, messages: list[ChatCompletionMessageParam]) -> str:
    """Send the conversation; print the reply as it arrives. A model still loading is waited for."""
    waited: list[str] = []

    def note(message: str) -> None:
        if not waited:
            err.print(f"{message} Waiting...", style="dim", markup=False)
        waited.append(message)

    return retry_while_loading(lambda: _send(client, args, messages), timeout=args.timeout, on_wait=note)


def _send(client: OpenRFT, args: argparse.Namespace, messages: list[ChatCompletionMessageParam]) -> str:
    """One request; the reply is printed as it streams in (reasoning, if any, dimmed on stderr)."""
    temperature = omit if args.temperature is None else args.temperature
    if args.no_stream:
        done = client.chat.completions.create(
            model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=temperature
        )
        message = done.choices[0].message
        reasoning = getattr(message, "reasoning_content", None)  # the service's field beside OpenAI's
        if reasoning:
            err.print(reasoning, style="dim", markup=False)
        text = message.content or ""
        sys.stdout.write(text + "\n")
        return text
    parts: list[str] = []
    with client.chat.completions.create(
        model=args.model, messages=messages, stream=True, max_tokens=args.max_tokens, temperature=temperature
    ) as stream:
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            reasoning = getattr(delta, "reasoning_content", None)
            if reasoning:
                err.print(reasoning, style="dim", end="", markup=False)
            if delta.content:
                parts.append(delta.content)
                sys.stdout.write(delta.content)
                sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)


def chat(args: argparse.Namespace) -> int:
    client = make_client(args)
    history: list[ChatCompletionMessageParam] = (
        [{"role": "system", "content": args.system}] if args.system else []
    )
    if args.message is not None:
        _reply(client, args, [*history, {"role": "user", "content": args.message}])
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(f"chatting with {args.model}; Ctrl+D or 'exit' to leave", style="dim")
    while True:
        try:
            text = input("you> " if interactive else "")
        except EOFError:
            return 0
        if not text.strip():
            continue
        if text.strip().lower() in EXIT_WORDS:
            return 0
        history.append({"role": "user", "content": text})
        history.append({"role": "assistant", "content": _reply(client, args, history)})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", parents=[connection_options()], help="chat with a base or fine-tuned model")
    p.add_argument("model")
    p.add_argument("--message", "-m", help="send one message, print the reply and exit")
    p.add_argument("--system", help="a system message")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float)
    p.add_argument("--no-stream", action="store_true", help="wait for the whole reply")
    p.set_defaults(func=chat)
