"""A deterministic OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, a random port.

It implements ``POST /v1/chat/completions`` only, records every request (body and headers), and answers
``"reply to: <last line of the last user message>"``. Each request first takes the next scripted action,
if any (FIFO; default ``"ok"``):

- ``"ok"``: a normal answer;
- ``"401"``: HTTP 401 whose message echoes the bearer token (as real servers partly do);
- ``"429"``: HTTP 429 with ``Retry-After: <retry_after>``;
- ``"500"``: HTTP 500;
- ``"sleep"``: wait ``sleep_s`` seconds (past the client's timeout), then answer normally;
- ``"malformed"``: HTTP 200 with a body that is not JSON;
- ``"no_choices"``: HTTP 200 with a JSON object without choices.

``delay_s`` makes every request take that long (to overlap them), and ``max_in_flight`` reports the
largest number of requests the server was handling at once. :func:`closed_port_url` gives a URL where
nothing listens (the "server down" case).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACTIONS = ("ok", "401", "429", "500", "sleep", "malformed", "no_choices")


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]  # names lower-cased


@dataclass
class ServerState:
    script: deque[str] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    delay_s: float = 0.0
    sleep_s: float = 1.0
    retry_after: str = "0"
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def reply_for(body: dict[str, Any]) -> str:
    users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    last_line = users[-1].strip().splitlines()[-1] if users else ""
    return f"reply to: {last_line}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(raw)
        with state.lock:
            state.requests.append(Recorded(body, {k.lower(): v for k, v in self.headers.items()}))
            action = state.script.popleft() if state.script else "ok"
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            if state.delay_s:
                time.sleep(state.delay_s)
            self._act(action, body, state)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _act(self, action: str, body: dict[str, Any], state: ServerState) -> None:
        if action == "401":
            token = self.headers.get("authorization", "").removeprefix("Bearer ")
            self._send(401, {"error": {"message": f"Incorrect API key provided: {token}"}})
        elif action == "429":
            self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": state.retry_after})
        elif action == "500":
            self._send(500, {"error": {"message": "internal error"}})
        elif action == "malformed":
            self._send_raw(200, b'{"choices": [ this is not json')
        elif action == "no_choices":
            self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
        else:
            if action == "sleep":
                time.sleep(state.sleep_s)
            self._send(200, completion(body))

    def _send(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode("utf-8"), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to answer


def completion(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "test"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply_for(body)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


class FakeOpenAIServer:
    """Start with ``with FakeOpenAIServer() as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = ServerState()
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def state(self) -> ServerState:
        return self._httpd.state

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def requests(self) -> list[Recorded]:
        with self.state.lock:
            return list(self.state.requests)

    def script(self, *actions: str) -> None:
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"unknown actions {unknown}; use {ACTIONS}")
        with self.state.lock:
            self.state.script.extend(actions)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: bind a free port, then release it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
