"""`mktod evaluate --generator openai ...`: answer a split with a chat LLM over the OpenAI API, then score.

The CLI's part only: read the API key from the environment variable named by ``--openai-api-key-env``,
resolve paths, build retriever -> meta knowledge -> :class:`~mktod.generators.openai_chat.OpenAIChatGenerator`
(with demonstrations drawn from the training split) and call :func:`mktod.evaluate.evaluate_pipeline`.
Writes ``predictions.txt``, ``records.jsonl`` and ``run.json`` (settings without the key, the command,
scores, wall time) under ``--out`` and prints one JSON object. Answers are cached under
``--openai-cache-dir`` (default ``<cache-dir>/openai``), so an interrupted run resumes by re-running it.

Also runnable on its own, before or without the ``evaluate`` wiring: ``python -m mktod.cli_generate``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mktod.cli_common import non_negative_int, positive_int
from mktod.errors import ConfigError, MktodError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the chat-LLM options to the ``evaluate`` subparser (it already has --dataset and --split)."""
    g = parser.add_argument_group("generate with a chat LLM instead of reading --predictions")
    g.add_argument("--generator", choices=["openai"], help="generate responses with this backend, then score")
    g.add_argument("--openai-base-url", default=DEFAULT_BASE_URL, help="OpenAI-compatible API root")
    g.add_argument("--openai-model", default="gpt-3.5-turbo", help="model name sent with each request")
    g.add_argument(
        "--openai-api-key-env",
        default="OPENAI_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key (default OPENAI_API_KEY; local servers need none)",
    )
    g.add_argument(
        "--openai-max-tokens", type=int, help="response token limit (default 128 for SMD, else 64)"
    )
    g.add_argument(
        "--openai-stop",
        action="append",
        metavar="TEXT",
        help="stop sequence (repeatable); \\n is a newline, e.g. --openai-stop '\\n' for one-line responses",
    )
    g.add_argument("--openai-timeout", type=float, default=60.0, help="seconds per request attempt")
    g.add_argument(
        "--openai-max-retries", type=non_negative_int, default=5, help="retries on 429/5xx/timeouts"
    )
    g.add_argument("--openai-concurrency", type=positive_int, default=4, help="requests in flight at once")
    g.add_argument("--openai-cache-dir", help="answer cache (default: <cache-dir>/openai)")
    g.add_argument("--no-openai-cache", action="store_true", help="send every request, store nothing")
    g.add_argument(
        "--meta", choices=["none", "prefix", "prompt"], default="prompt", help="meta knowledge form"
    )
    # No default here: with --checkpoint the checkpoint's own setting applies; the chat LLM uses condensed.
    g.add_argument("--setting", choices=["condensed", "large"], help="KB setting (default condensed)")
    g.add_argument("--retriever", default="frequency", help="bm25, frequency, or a trained retriever folder")
    # No default either: with --checkpoint the checkpoint's own k applies; the chat LLM takes 7.
    g.add_argument(
        "--k", type=positive_int, help="records retrieved per turn (default 7, or the checkpoint's)"
    )
    g.add_argument(
        "--demos", type=non_negative_int, default=2, help="in-context demonstrations per turn (0 for none)"
    )
    g.add_argument("--demo-k", type=positive_int, help="records shown per demonstration (default: --k)")
    g.add_argument(
        "--limit",
        type=positive_int,
        help="only the first N system turns of the split (with --predictions: the file holds N lines)",
    )
    g.add_argument("--out", help="output folder (default runs/openai/DATASET-SPLIT-SETTING-META)")
    g.add_argument("--device", default="cpu", help="torch device of a dense retriever (default cpu)")


def evaluate_with_generator(args: argparse.Namespace) -> int:
    """Generate with the chat LLM, score, write outputs and print one JSON object; 0 on success."""
    from mktod.cli_common import offline_data_paths

    # Offline by default: a dense retriever's encoder would otherwise hang on hub timeouts.
    paths = offline_data_paths(args)
    api_key = os.environ.get(args.openai_api_key_env) or None
    if api_key is None and args.openai_base_url.rstrip("/") == DEFAULT_BASE_URL:
        raise ConfigError(f"set ${args.openai_api_key_env} to an OpenAI API key (or use --openai-base-url)")

    from mktod.datasets import get_loader
    from mktod.evaluate import evaluate_pipeline
    from mktod.evaluate_retriever import large_kb
    from mktod.generators.openai_chat import OpenAIChatGenerator, OpenAIConfig
    from mktod.generators.prompts import DemonstrationPool
    from mktod.meta import MetaConfig
    from mktod.metrics import EntityVocab
    from mktod.pipeline import KBSetting, Pipeline, PipelineConfig
    from mktod.retriever import Retriever, build_retriever

    started = time.monotonic()
    loader = get_loader(args.dataset)
    split = loader.load_split(args.split, paths)
    vocab = EntityVocab.from_file(args.dataset, loader.entity_file(paths))
    setting: KBSetting = "large" if args.setting == "large" else "condensed"
    global_kb = large_kb(args.dataset, paths) if setting == "large" else None
    k: int = 7 if args.k is None else args.k
    retriever = build_retriever(args.retriever, device=args.device)
    meta = MetaConfig(mode=args.meta)
    pool = None
    if args.demos > 0:
        encoder = retriever.encoder if isinstance(retriever, Retriever) else None
        train = loader.load_split("train", paths)
        pool = DemonstrationPool(
            train, retriever, meta, args.demo_k or k, global_kb=global_kb, encoder=encoder
        )
        pool.check_disjoint(split)
    cache_dir = None if args.no_openai_cache else args.openai_cache_dir or str(paths.cache_dir / "openai")
    config = OpenAIConfig(
        model=args.openai_model,
        base_url=args.openai_base_url,
        api_key=api_key,
        max_tokens=args.openai_max_tokens or (128 if args.dataset == "smd" else 64),
        timeout=args.openai_timeout,
        max_retries=args.openai_max_retries,
        max_concurrency=args.openai_concurrency,
        cache_dir=cache_dir,
        meta=args.meta,
        demos=args.demos,
        stop=tuple(s.replace("\\n", "\n") for s in args.openai_stop or ()),
    )
    out_dir = Path(args.out or f"runs/openai/{args.dataset}-{args.split}-{setting}-{args.meta}")
    # Batches larger than the concurrency keep every request slot busy.
    pipe_cfg = PipelineConfig(k=k, setting=setting, batch_size=max(8, 2 * args.openai_concurrency))
    with OpenAIChatGenerator(config, meta, pool) as generator:
        pipeline = Pipeline(retriever, generator, meta, pipe_cfg)
        result = evaluate_pipeline(pipeline, split, vocab, out_dir, global_kb=global_kb, limit=args.limit)
        stats = generator.stats()
    wall = time.monotonic() - started
    scores = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.responses.as_dict().items()}
    recall = {f"recall@{k}": round(v, 2) for k, v in result.retrieval.recall.items()}
    summary: dict[str, object] = {
        "dataset": args.dataset,
        "split": args.split,
        "setting": setting,
        "meta": args.meta,
        "model": args.openai_model,
        "retriever": args.retriever,
        "k": k,
        "demos": args.demos,
        "demo_similarity": pool.similarity if pool is not None else None,
        **scores,
        **recall,
        "turns": result.turns,
        "wall_s": round(wall, 1),
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "predictions": str(result.predictions_path),
        "records": str(result.records_path),
    }
    run = {**summary, "command": _command(), "openai": config.public_dict()}
    (out_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0


def _command() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""


def build_parser() -> argparse.ArgumentParser:
    """The standalone parser of ``python -m mktod.cli_generate`` (``mktod evaluate`` has the same options)."""
    from mktod.cli_common import DATASETS, add_path_options

    parser = argparse.ArgumentParser(
        prog="python -m mktod.cli_generate", description="Generate with a chat LLM and score a split."
    )
    add_path_options(parser)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--split", required=True, choices=["dev", "test"])
    add_generator_arguments(parser)
    parser.set_defaults(generator="openai")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return evaluate_with_generator(args)
    except MktodError as exc:
        print(f"mktod: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "mktod: interrupted (answers so far are cached; run the same command to resume)", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
