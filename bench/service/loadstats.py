"""The pure parts of the service load test: percentiles, /metrics parsing and differencing, the table.

Kept apart from run.py (server, client, plot) so tests check them on hand-made inputs without a server.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Dialogue = tuple[tuple[str, str], ...]  # (role, text) turns, the last one the user's


def parse_dialogues(text: str, where: str) -> tuple[Dialogue, ...]:
    """A JSON list of dialogues, each a list of {"role": "user" | "assistant", "content": str}."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc})") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: expected a non-empty JSON list of dialogues")
    dialogues = []
    for i, turns in enumerate(raw):
        ok = (
            isinstance(turns, list)
            and turns
            and all(
                isinstance(t, dict)
                and t.get("role") in ("user", "assistant")
                and isinstance(t.get("content"), str)
                and t["content"].strip()
                for t in turns
            )
        )
        if not ok or turns[-1]["role"] != "user":
            raise ValueError(
                f"{where}: dialogue {i} must be a list of {{role: user|assistant, content: non-empty text}} "
                "ending with a user turn"
            )
        dialogues.append(tuple((t["role"], t["content"]) for t in turns))
    return tuple(dialogues)


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


@dataclass(frozen=True)
class ServerTime:
    """Differences of the server's /metrics over one level, for the benchmarked route."""

    request_s: float  # sum of the route's server-side request durations (queueing for the pipeline included)
    retrieval_s: float
    generation_s: float
    retrieval_calls: int
    generation_calls: int
    statuses: dict[str, int]  # the route's responses by status, as the server counted them

    def share(self, seconds: float) -> float:
        return seconds / self.request_s if self.request_s > 0 else math.nan


@dataclass(frozen=True)
class ErrorSample:
    status: str  # the HTTP status, or the exception's class name when there was no response
    body: str
    count: int


@dataclass(frozen=True)
class Level:
    flow: str
    concurrency: int
    requests: int  # finished, ok or not
    errors: int
    wall_s: float
    requests_per_s: float
    latency: Latency  # of the successful requests
    server: ServerTime
    error_samples: tuple[ErrorSample, ...]
    load_avg_1m: float  # other jobs on the same cores inflate latencies

    @property
    def pipeline_busy(self) -> float:
        """Share of the wall time the (serialised) pipeline was retrieving or generating."""
        return (self.server.retrieval_s + self.server.generation_s) / self.wall_s if self.wall_s else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(seconds: Sequence[float]) -> Latency:
    if not seconds:
        return Latency(math.nan, math.nan, math.nan, math.nan, math.nan)
    ms = [s * 1e3 for s in seconds]
    return Latency(percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), sum(ms) / len(ms), max(ms))


Series = tuple[str, tuple[tuple[str, str], ...]]  # metric name, sorted label pairs
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match[1] == "n" else match[1]  # the exposition escapes only \\, \" and newline


def parse_metrics(text: str) -> dict[Series, float]:
    """Samples of a Prometheus text exposition (format 0.0.4); comments and timestamps are dropped."""
    samples: dict[Series, float] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, brace, rest = line.partition("{")
        if brace:
            body, _, tail = rest.rpartition("}")
            labels = tuple(sorted((k, _ESCAPE.sub(_unescape, v)) for k, v in _LABEL.findall(body)))
        else:
            name, _, tail = line.partition(" ")
            labels = ()
        fields = tail.split()
        if not fields:
            raise ValueError(f"/metrics line {number}: no value in {raw!r}")
        samples[(name.strip(), labels)] = float(fields[0])
    return samples


def diff_metrics(before: Mapping[Series, float], after: Mapping[Series, float]) -> dict[Series, float]:
    """after - before per series; a series that appeared in between counts from 0."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def total(samples: Mapping[Series, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (e.g. over all statuses)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def server_time(delta: Mapping[Series, float], route: str) -> ServerTime:
    statuses: Counter[str] = Counter()
    for (name, labels), value in delta.items():
        lab = dict(labels)
        if name == "mktod_http_requests_total" and lab.get("route") == route and value:
            statuses[lab.get("status", "?")] += int(value)
    return ServerTime(
        request_s=total(delta, "mktod_http_request_duration_seconds_sum", route=route),
        retrieval_s=total(delta, "mktod_retrieval_seconds_sum"),
        generation_s=total(delta, "mktod_generation_seconds_sum"),
        retrieval_calls=int(total(delta, "mktod_retrieval_seconds_count")),
        generation_calls=int(total(delta, "mktod_generation_seconds_count")),
        statuses=dict(sorted(statuses.items())),
    )


def fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _per_call(seconds: float, calls: int) -> str:
    return f"{seconds / calls * 1e3:.1f}" if calls else "-"


def render_markdown(machine: Mapping[str, Any], run: Mapping[str, Any], levels: Sequence[Level]) -> str:
    env = "".join(f"{k}={v} " for k, v in run["server_env"].items())
    lines = [
        "# Service load test",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['gpu']}, Python {machine['python']}, "
        f"{machine['os']}. Client and server share the machine (loopback).",
        f"Commit {run['commit']}. Command: `{run['command']}`.",
        f"Server: `{env}{run['server_command']}`.",
        "",
        "| flow | concurrency | requests | errors | req/s | p50 ms | p90 ms | p99 ms "
        "| retrieval ms/call | generation ms/call | retrieval % | generation % | other % | pipeline busy % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        s = lv.server
        retrieval, generation = s.share(s.retrieval_s), s.share(s.generation_s)
        per_call = _per_call(s.retrieval_s, s.retrieval_calls), _per_call(s.generation_s, s.generation_calls)
        lines.append(
            f"| {lv.flow} | {lv.concurrency} | {lv.requests} | {lv.errors} | {lv.requests_per_s:.2f} "
            f"| {fmt(lv.latency.p50_ms)} | {fmt(lv.latency.p90_ms)} | {fmt(lv.latency.p99_ms)} "
            f"| {per_call[0]} | {per_call[1]} "
            f"| {fmt(100 * retrieval)} | {fmt(100 * generation)} | {fmt(100 * (1 - retrieval - generation))} "
            f"| {fmt(100 * lv.pipeline_busy)} |"
        )
    lines += [
        "",
        "Latencies are the client's, of successful requests. Retrieval / generation / other % are shares of "
        "the server's summed request time for the route (from /metrics differences); other is queueing "
        "for the pipeline, meta tagging, validation and serialisation. Pipeline busy % is retrieval + "
        "generation time over the level's wall time: near 100 the pipeline is the bottleneck.",
    ]
    short = sorted({lv.requests for lv in levels if lv.requests < lv.concurrency})
    if short:
        lines += [
            "",
            f"Levels with fewer requests ({', '.join(map(str, short))}) than clients never had all clients "
            "in flight at once.",
        ]
    loads = [lv.load_avg_1m for lv in levels]
    if loads:
        lines += [
            "",
            f"1-minute load average after each level: {min(loads):.1f} to {max(loads):.1f} on "
            f"{machine['cores']} cores.",
        ]
    errors = [(lv, e) for lv in levels for e in lv.error_samples]
    lines += ["", "## Errors", ""]
    for lv, e in errors:
        lines.append(f"- {lv.flow} x{lv.concurrency}: {e.count} x `{e.status}` {e.body!r}")
    for lv in levels:
        counted = sum(lv.server.statuses.values())
        if set(lv.server.statuses) - {"200"} or counted != lv.requests:
            shown = ", ".join(f"{n} x {status}" for status, n in lv.server.statuses.items()) or "none"
            lines.append(
                f"- {lv.flow} x{lv.concurrency}: the server counted {shown} for {lv.requests} requests sent"
            )
    if lines[-1] == "":
        lines.append("None.")
    return "\n".join(lines) + "\n"


def finite(value: Any) -> Any:
    """NaN (no successful request, no server time) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
