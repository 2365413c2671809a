"""Small HTTP servers on 127.0.0.1 for grader tests: a scripted OpenAI-compatible chat endpoint and a
scoring endpoint. Each runs in a thread of the test process and records what it received."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any]  # (status, JSON body)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0


@contextmanager
def serve(
    handler: Callable[[str, dict[str, Any], dict[str, str], Recorder], Reply],
) -> Iterator[tuple[str, Recorder]]:
    """Serve ``handler(path, body, headers, recorder) -> (status, json)`` at a random port."""
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            headers = {k.lower(): v for k, v in self.headers.items()}
            with rec.lock:
                rec.requests.append({"path": self.path, "body": body, "headers": headers})
                rec.active += 1
                rec.max_active = max(rec.max_active, rec.active)
            try:
                status, payload = handler(self.path, body, headers, rec)
            finally:
                with rec.lock:
                    rec.active -= 1
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()


def completion(content: str | None, *, refusal: str | None = None, model: str = "judge-1") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    }


def scripted_judge(path: str, body: dict[str, Any], headers: dict[str, str], rec: Recorder) -> Reply:
    """A chat endpoint whose behaviour is chosen by a `DO:<action>` marker in the last user message.

    DO:score=<x>  answers {"result": x}        DO:prose=<x>  wraps it in prose and a code fence
    DO:label=<l>  answers {"result": "l"}      DO:refuse     refuses
    DO:garbage    answers plain text           DO:flaky      500 on the first try of each message
    DO:down       always 500                   DO:slow=<s>   sleeps s seconds, then scores 1
    DO:noformat   400 if response_format is sent, else scores 0.25
    """
    if not path.endswith("/chat/completions"):
        return 404, {"error": {"message": "not found"}}
    text = str(body["messages"][-1]["content"])
    m = re.search(r"DO:(\w+)(?:=([^\s]+))?", text)
    action, arg = (m.group(1), m.group(2)) if m else ("score", "0.5")
    if action == "score":
        return 200, completion(json.dumps({"steps": [], "result": json.loads(arg)}))
    if action == "prose":
        return 200, completion(f'Let me think.\n```json\n{{"steps": [], "result": {arg}}}\n```\nDone.')
    if action == "label":
        return 200, completion(json.dumps({"result": arg}))
    if action == "refuse":
        return 200, completion(None, refusal="I cannot grade this.")
    if action == "garbage":
        return 200, completion("I think it is pretty good!")
    if action == "flaky":
        with rec.lock:
            tries = sum(1 for r in rec.requests if str(r["body"]["messages"][-1]["content"]) == text)
        return (500, {"error": {"message": "boom"}}) if tries == 1 else (200, completion('{"result": 1}'))
    if action == "down":
        return 503, {"error": {"message": "overloaded"}}
    if action == "slow":
        time.sleep(float(arg))
        return 200, completion('{"result": 1}')
    if action == "noformat":
        if "response_format" in body:
            return 400, {"error": {"message": "response_format is not supported"}}
        return 200, completion('{"result": 0.25}')
    return 400, {"error": {"message": f"unknown action {action}"}}
