"""Prometheus text exposition, hand-written: request counts and latencies, retrieval and generation time.

Per-app (not process-global) so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
Labels = tuple[tuple[str, str], ...]


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def inc(self, name: str, help_text: str, labels: Labels = (), value: float = 1.0) -> None:
        with self._lock:
            self._help.setdefault(name, ("counter", help_text))
            series = self._counters[name]
            series[labels] = series.get(labels, 0.0) + value

    def observe(self, name: str, help_text: str, value: float, labels: Labels = ()) -> None:
        with self._lock:
            self._help.setdefault(name, ("histogram", help_text))
            series = self._histograms[name]
            if labels not in series:
                series[labels] = _Histogram(_BUCKETS)
            series[labels].observe(value)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in sorted(self._help.items()):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "counter":
                    for labels, value in sorted(self._counters[name].items()):
                        lines.append(f"{name}{_fmt(labels)} {_num(value)}")
                    continue
                for labels, hist in sorted(self._histograms[name].items()):
                    cumulative = 0
                    for bound, count in zip((*hist.buckets, float("inf")), hist.counts, strict=True):
                        cumulative += count
                        le = "+Inf" if bound == float("inf") else _num(bound)
                        lines.append(f"{name}_bucket{_fmt((*labels, ('le', le)))} {cumulative}")
                    lines.append(f"{name}_sum{_fmt(labels)} {_num(hist.total)}")
                    lines.append(f"{name}_count{_fmt(labels)} {cumulative}")
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


class MetricsMiddleware:
    """Counts every request (including 413/429 answered by inner middleware) by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The template, not the raw path: ids in paths would make one series per session.
            template = getattr(route, "path", None) or "unmatched"
            labels: Labels = (("method", str(scope["method"])), ("route", template))
            self.metrics.inc(
                "mktod_http_requests_total",
                "HTTP requests by route and status",
                (*labels, ("status", str(status))),
            )
            self.metrics.observe(
                "mktod_http_request_duration_seconds",
                "HTTP request latency",
                time.perf_counter() - start,
                labels,
            )
