"""Load test of the dialogue service on loopback: `mktod serve` under 1, 8 and 32 concurrent clients.

    python bench/service/run.py                                      # what `mktod serve` serves by default
    python bench/service/run.py --checkpoint runs/smoke/best         # unknown options go to `mktod serve`
    python bench/service/run.py --requests-per-level 16 --out /tmp/s -- --checkpoint runs/smoke/best
    python bench/service/run.py --flows chat session --levels 1 4    # also the session flow

Starts `mktod serve --state-dir TMP --port FREE` (rate limit off) as a subprocess, waits for /readyz, then
for each level sends a bounded number of `POST /v1/chat` requests about the demo KB from an asyncio httpx
client. /metrics is scraped before and after each level; the differences give the server time spent in
retrieval and in generation. Writes service.json (every number, the machine, the commands, the commit),
service.md (the table) and service.png (latency percentiles and throughput vs concurrency).
See README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import matplotlib
from loadstats import (  # beside this file: the script's folder is on sys.path
    Dialogue,
    ErrorSample,
    Level,
    Series,
    diff_metrics,
    finite,
    fmt,
    parse_dialogues,
    parse_metrics,
    render_markdown,
    server_time,
    summarise,
)
from tqdm import tqdm

from mktod.local_server import LocalServer, ServerStartError, free_port, local_server
from mktod.sysinfo import cpu_model, git_commit

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): no display on servers and CI
from matplotlib.ticker import ScalarFormatter

REPO = Path(__file__).resolve().parents[2]
LEVELS = (1, 8, 32)
CHAT_ROUTE = "/v1/chat"
SESSION_ROUTE = "/v1/sessions/{session_id}/messages"
ROUTES = {"chat": CHAT_ROUTE, "session": SESSION_ROUTE}
MAX_ERROR_BODY = 300
# Recorded with the results: thread counts change CPU latencies several-fold on a small shared machine.
RECORDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "CUDA_VISIBLE_DEVICES")
SERVER_ENV = {"MKTOD_RATE_LIMIT_PER_MINUTE": "0"}  # every request comes from one address: no 429s

# Dialogues about the demo KB (kb/demo.jsonl, which `mktod serve` seeds into an empty store).
DIALOGUES = Path(__file__).with_name("dialogues.json")


# ---------------------------------------------------------------------- the server
@contextmanager
def serve(serve_args: Sequence[str], ready_timeout: float) -> Iterator[LocalServer]:
    """`mktod serve` on a free loopback port with a fresh state folder, once /readyz answers 200."""
    with tempfile.TemporaryDirectory(prefix="mktod-bench-") as tmp:
        port = free_port()
        command = [sys.executable, "-m", "mktod.cli", "serve", "--state-dir", tmp, "--port", str(port)]
        command += ["--log-level", "warning", *serve_args]  # no access-log line per request
        try:
            with local_server(
                command,
                f"http://127.0.0.1:{port}",
                "/readyz",
                Path(tmp) / "server.log",
                name="`mktod serve`",
                env=SERVER_ENV,
                timeout=ready_timeout,
                announce=True,
            ) as server:
                yield server
        except ServerStartError as err:
            sys.exit(f"{err}\n(raise --ready-timeout if it was only slow)")


# ---------------------------------------------------------------------- the client
class Budget:
    """Requests left in a level: a count, and a deadline after which no new request starts."""

    def __init__(self, requests: int, seconds: float) -> None:
        self.left = requests
        self.deadline = time.monotonic() + seconds if seconds > 0 else math.inf

    def take(self) -> bool:
        if self.left <= 0 or time.monotonic() > self.deadline:
            return False
        self.left -= 1  # no await in between: asyncio tasks cannot interleave here
        return True


@dataclass
class Tally:
    ok: list[float]
    errors: Counter[tuple[str, str]]
    bar: Any


def _has_reply(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("reply"), str)


async def _timed(client: httpx.AsyncClient, tally: Tally, path: str, payload: dict[str, Any]) -> None:
    start = time.perf_counter()
    try:
        response = await client.post(path, json=payload)
    except httpx.HTTPError as exc:
        tally.errors[(type(exc).__name__, str(exc)[:MAX_ERROR_BODY])] += 1
    else:
        elapsed = time.perf_counter() - start
        if response.status_code == 200 and _has_reply(response):
            tally.ok.append(elapsed)
        else:
            tally.errors[(str(response.status_code), response.text[:MAX_ERROR_BODY])] += 1
    tally.bar.update()


async def _chat_worker(
    client: httpx.AsyncClient, budget: Budget, tally: Tally, dialogues: Sequence[Dialogue], first: int
) -> None:
    i = first
    while budget.take():
        dialogue = dialogues[i % len(dialogues)]
        i += 1
        await _timed(
            client, tally, CHAT_ROUTE, {"messages": [{"role": r, "content": t} for r, t in dialogue]}
        )


async def _session_worker(
    client: httpx.AsyncClient, budget: Budget, tally: Tally, dialogues: Sequence[Dialogue], first: int
) -> None:
    """One session per dialogue; its user turns in order, the replies coming from the server."""
    i = first
    while budget.left > 0 and time.monotonic() <= budget.deadline:
        dialogue = dialogues[i % len(dialogues)]
        i += 1
        try:
            created = await client.post("/v1/sessions")
        except httpx.HTTPError as exc:
            tally.errors[(f"{type(exc).__name__} (POST /v1/sessions)", str(exc)[:MAX_ERROR_BODY])] += 1
            return
        if created.status_code != 201:
            tally.errors[(f"{created.status_code} (POST /v1/sessions)", created.text[:MAX_ERROR_BODY])] += 1
            return
        path = f"/v1/sessions/{created.json()['id']}/messages"
        for role, text in dialogue:
            if role == "user":
                if not budget.take():
                    return
                await _timed(client, tally, path, {"text": text})


async def run_level(
    url: str,
    dialogues: Sequence[Dialogue],
    flow: str,
    concurrency: int,
    requests: int,
    seconds: float,
    timeout: float,
) -> tuple[Tally, float, dict[Series, float]]:
    """Run one level; returns the tally, its wall time and the /metrics differences over it."""
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        before = parse_metrics((await client.get("/metrics")).text)
        budget = Budget(requests, seconds)
        with tqdm(total=requests, desc=f"  {flow} x{concurrency}", leave=False, file=sys.stderr) as bar:
            tally = Tally([], Counter(), bar)
            worker = _chat_worker if flow == "chat" else _session_worker
            start = time.perf_counter()
            # Each worker starts at its own dialogue so concurrent requests differ.
            await asyncio.gather(*(worker(client, budget, tally, dialogues, w) for w in range(concurrency)))
            wall = time.perf_counter() - start
        after = parse_metrics((await client.get("/metrics")).text)
    return tally, wall, diff_metrics(before, after)


def measure(
    url: str, dialogues: Sequence[Dialogue], flow: str, concurrency: int, args: argparse.Namespace
) -> Level:
    tally, wall, delta = asyncio.run(
        run_level(
            url,
            dialogues,
            flow,
            concurrency,
            args.requests_per_level,
            args.max_seconds_per_level,
            args.timeout,
        )
    )
    done = len(tally.ok) + sum(tally.errors.values())
    samples = tuple(ErrorSample(status, body, count) for (status, body), count in tally.errors.most_common())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    server = server_time(delta, ROUTES[flow])
    return Level(
        flow,
        concurrency,
        done,
        done - len(tally.ok),
        wall,
        done / wall if wall else 0.0,
        summarise(tally.ok),
        server,
        samples,
        load,
    )


# ---------------------------------------------------------------------- reporting
def gpu_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no GPU"
    found = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        .stdout.strip()
        .splitlines()
    )
    return ", ".join(found) or "no GPU"


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "os": platform.platform(),
    }


def recorded_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that shape the server's behaviour; never the API key."""
    keep = {k: v for k, v in env.items() if k in RECORDED_ENV or k.startswith("MKTOD_")}
    return dict(sorted((k, "***" if k == "MKTOD_API_KEY" else v) for k, v in keep.items()))


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def plot(path: Path, levels: Sequence[Level]) -> None:
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for flow in dict.fromkeys(lv.flow for lv in levels):
        # A concurrency measured twice (e.g. --levels 1 8 32 1) is drawn from its last measurement.
        last = {lv.concurrency: lv for lv in levels if lv.flow == flow}
        pts = [last[c] for c in sorted(last)]
        xs = [lv.concurrency for lv in pts]
        for name, style in (("p50", "o-"), ("p90", "s--"), ("p99", "x:")):
            lat.plot(xs, [getattr(lv.latency, f"{name}_ms") for lv in pts], style, label=f"{flow} {name}")
        thr.plot(xs, [lv.requests_per_s for lv in pts], "o-", label=flow)
    lat.set(
        xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)", title="client latency"
    )
    thr.set(xscale="log", xlabel="concurrent clients", ylabel="requests / s", title="throughput")
    thr.set_ylim(bottom=0)
    for ax in (lat, thr):
        ax.set_xticks(sorted({lv.concurrency for lv in levels}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("mktod serve on loopback")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(out: Path, machine: dict[str, Any], run: dict[str, Any], levels: list[Level]) -> None:
    results = [{**asdict(lv), "pipeline_busy": lv.pipeline_busy} for lv in levels]
    payload = finite({"machine": machine, "run": run, "results": results})
    tmp = out / "service.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(out / "service.json")  # an interrupted run leaves the last complete file behind
    (out / "service.md").write_text(render_markdown(machine, run, levels), encoding="utf-8")
    plot(out / "service.png", levels)


# ---------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        # No abbreviations: an option this script does not know goes to `mktod serve` as written.
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrent clients")
    parser.add_argument("--flows", nargs="+", choices=sorted(ROUTES), default=["chat"])
    parser.add_argument("--requests-per-level", type=int, default=128)
    parser.add_argument(
        "--max-seconds-per-level",
        type=float,
        default=300.0,
        help="start no new request after this long (0: no limit)",
    )
    parser.add_argument("--warmup", type=int, default=4, help="untimed requests before the first level")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout, seconds")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for /readyz")
    parser.add_argument(
        "--dialogues", type=Path, default=DIALOGUES, help="JSON list of dialogues (lists of role/content)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "service")
    args, serve_args = parser.parse_known_args(argv)
    serve_args = [a for a in serve_args if a != "--"]
    chosen = {a.split("=", 1)[0] for a in serve_args} & {"--port", "--state-dir", "--host"}
    if chosen:
        parser.error(
            f"{', '.join(sorted(chosen))}: the benchmark chooses these itself (a free port, a fresh folder)"
        )
    if args.requests_per_level < 1 or min(args.levels) < 1:
        parser.error("--requests-per-level and --levels must be >= 1")
    try:
        dialogues = parse_dialogues(args.dialogues.read_text(encoding="utf-8"), str(args.dialogues))
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    # A plain `kill` must still stop the server (the `finally` of serve()).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    given = sys.argv[1:] if argv is None else list(argv)
    run = {
        "commit": git_commit(REPO),
        "command": shlex.join(["python", "bench/service/run.py", *given]),
        "server_command": shlex.join(
            ["mktod", "serve", "--state-dir", "TMP", "--port", "PORT", "--log-level", "warning", *serve_args]
        ),
        "server_env": recorded_env({**os.environ, **SERVER_ENV}),
        "levels": args.levels,
        "flows": args.flows,
        "requests_per_level": args.requests_per_level,
        "max_seconds_per_level": args.max_seconds_per_level,
        "warmup": args.warmup,
        "dialogues": f"{len(dialogues)} from {_shown(args.dialogues)}",
    }
    levels: list[Level] = []
    with serve(serve_args, args.ready_timeout) as server:
        if args.warmup:
            asyncio.run(run_level(server.url, dialogues, "chat", 1, args.warmup, 0.0, args.timeout))
        for flow in args.flows:
            for concurrency in args.levels:
                try:
                    level = measure(server.url, dialogues, flow, concurrency, args)
                except httpx.TransportError as exc:  # /metrics unreachable: most likely the server died
                    sys.exit(server.exited() or f"{flow} x{concurrency}: the server stopped answering: {exc}")
                levels.append(level)
                print(
                    f"{flow} x{concurrency}: {level.requests} requests, {level.errors} errors, "
                    f"{level.requests_per_s:.2f} req/s, p50/p90/p99 {fmt(level.latency.p50_ms)}/"
                    f"{fmt(level.latency.p90_ms)}/{fmt(level.latency.p99_ms)} ms",
                    flush=True,
                )
                write_all(args.out, machine, run, levels)
    print(f"wrote {args.out}/service.{{json,md,png}}")
    return 1 if any(lv.errors for lv in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
