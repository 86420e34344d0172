"""The `mktod` command line.

Each subcommand parses its options, resolves paths (the only place besides the service that reads
environment variables) and calls one library function. Errors meant for people (MktodError) are
printed without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from mktod import __version__
from mktod.cli_common import DATASETS, add_path_options, data_paths, positive_int
from mktod.cli_generate import add_generator_arguments
from mktod.cli_retriever import add_retriever_commands
from mktod.cli_serve import add_serve_commands
from mktod.cli_train import add_checkpoint_arguments, add_train_commands
from mktod.errors import ConfigError, MktodError
from mktod.paths import default_manifest

Handler = Callable[[argparse.Namespace], int]


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _scores_json(scores: object) -> dict[str, object]:
    """Scores as reported everywhere: 0-100, two decimals (EVALUATION.md); counts unchanged."""
    fields = asdict(scores)  # type: ignore[call-overload]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in fields.items()}


# --- data ---------------------------------------------------------------------------------------


def cmd_data_stats(args: argparse.Namespace) -> int:
    from mktod.datasets.stats import compute_stats, format_stats_table, stats_to_json

    stats = compute_stats(data_paths(args), args.dataset or None)
    if args.json:
        _print_json(stats_to_json(stats))
    else:
        print(format_stats_table(stats))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mktod.fetch import fetch, load_manifest

    paths = data_paths(args)
    entries = load_manifest(Path(args.manifest) if args.manifest else default_manifest())
    if args.only:
        entries = tuple(e for e in entries if e.file.startswith(tuple(args.only)))
    for result in fetch(entries, paths.data_dir, force=args.force):
        print(f"{result.status:10s} {result.file}")
    print(f"all {len(entries)} files verified under {paths.data_dir}")
    return 0


# --- evaluation and baselines -------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a predictions file, or generate the predictions first with a checkpoint or a chat LLM."""
    modes = [bool(args.predictions), bool(args.checkpoint), args.generator is not None]
    if sum(modes) != 1:
        raise ConfigError(
            "evaluate: pass exactly one of --predictions FILE, --checkpoint DIR, --generator openai"
        )
    if args.checkpoint:
        from mktod.cli_train import evaluate_checkpoint

        return evaluate_checkpoint(args)
    if args.generator is not None:
        from mktod.cli_generate import evaluate_with_generator

        return evaluate_with_generator(args)

    from mktod.evaluate import evaluate_file

    scores = evaluate_file(
        args.dataset, args.split, Path(args.predictions), data_paths(args), limit=args.limit
    )
    _print_json({"dataset": args.dataset, "split": args.split, **_scores_json(scores)})
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Two predictions files on the same turns: their scores and the Entity F1 difference's interval."""
    from mktod.evaluate import compare_files

    result = compare_files(
        args.dataset,
        args.split,
        Path(args.first),
        Path(args.second),
        data_paths(args),
        limit=args.limit,
        draws=args.draws,
        seed=args.seed,
    )
    _print_json({k: _rounded(v) for k, v in result.as_json().items()})
    return 0


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def cmd_baseline(args: argparse.Namespace) -> int:
    from mktod.baseline import run_baseline

    result = run_baseline(args.dataset, args.split, Path(args.out), data_paths(args))
    _print_json(
        {"dataset": args.dataset, "split": args.split, "predictions": args.out, **_scores_json(result)}
    )
    return 0


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mktod", description="MK-TOD: retrieval-generation alignment for task-oriented dialogue."
    )
    parser.add_argument("--version", action="version", version=f"mktod {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="dataset statistics and download")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    stats = data_sub.add_parser("stats", help="per-split counts next to the counts MK-TOD reports")
    add_path_options(stats)
    stats.add_argument("--dataset", action="append", choices=DATASETS)
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(handler=cmd_data_stats)
    fetch = data_sub.add_parser("fetch", help="download the canonical files and check their SHA-256")
    add_path_options(fetch)
    fetch.add_argument("--manifest", help="manifest JSON (default: data/manifest.json)")
    fetch.add_argument("--only", action="append", help="only files under this prefix, e.g. smd/")
    fetch.add_argument("--force", action="store_true", help="download even if a file is present")
    fetch.set_defaults(handler=cmd_data_fetch)

    ev = sub.add_parser(
        "evaluate",
        help="score responses (BLEU, Entity F1, Recall@K) on a split: a predictions file, or generated by a "
        "trained checkpoint or a chat LLM",
    )
    add_path_options(ev)
    ev.add_argument("--dataset", required=True, choices=DATASETS)
    ev.add_argument("--split", required=True, choices=["dev", "test"])
    ev.add_argument("--predictions", help="one predicted response per line, in canonical turn order")
    # The chat-LLM options come first: the checkpoint group adds only the shared options still missing.
    add_generator_arguments(ev)
    add_checkpoint_arguments(ev)
    ev.set_defaults(handler=cmd_evaluate)

    cmp = sub.add_parser(
        "compare",
        help="score two predictions files on the same turns and bootstrap their Entity F1 difference",
    )
    add_path_options(cmp)
    cmp.add_argument("--dataset", required=True, choices=DATASETS)
    cmp.add_argument("--split", required=True, choices=["dev", "test"])
    cmp.add_argument("first", help="predictions file of system A")
    cmp.add_argument("second", help="predictions file of system B (the difference is A - B)")
    cmp.add_argument("--limit", type=positive_int, help="the files hold only the first N system turns")
    cmp.add_argument("--draws", type=positive_int, default=2000, help="bootstrap redraws of the dialogues")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.set_defaults(handler=cmd_compare)

    bl = sub.add_parser("baseline", help="write predictions of the retrieve-and-fill baseline")
    add_path_options(bl)
    bl.add_argument("--dataset", required=True, choices=DATASETS)
    bl.add_argument("--split", required=True, choices=["dev", "test"])
    bl.add_argument("--out", required=True, help="predictions file to write")
    bl.set_defaults(handler=cmd_baseline)

    add_retriever_commands(sub)
    add_train_commands(sub)
    add_serve_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except MktodError as exc:
        print(f"mktod: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mktod: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
