"""Request limits applied before routing: body size (413) and a per-key / per-IP rate limit (429)."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MAX_CLIENTS = 10_000


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute, bursts up to ``per_minute``."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.clock = clock
        self._lock = threading.Lock()
        # LRU-bounded so a flood of distinct keys cannot grow memory without limit.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds to wait before the next one will."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > _MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait


def client_key(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            # Hashed so the table never holds raw keys.
            return "key:" + hashlib.sha256(value).hexdigest()
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


class LimitsMiddleware:
    """413 for bodies over ``max_body_bytes`` (declared or streamed); 429 past the rate limit on /v1."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, limiter: RateLimiter | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.limiter is not None and str(scope["path"]).startswith("/v1/"):
            wait = self.limiter.acquire(client_key(scope))
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                msg = (
                    f"rate limit of {self.limiter.per_minute} requests a minute exceeded; retry in {retry} s"
                )
                await error_response(429, "rate_limited", msg, {"Retry-After": retry})(scope, receive, send)
                return
        too_large = error_response(
            413, "body_too_large", f"request body exceeds the limit of {self.max_body_bytes} bytes"
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await too_large(scope, receive, send)
                return
        # Chunked bodies have no length up front: read up to the limit here, then replay to the app.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
