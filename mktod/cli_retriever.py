"""`mktod train-retriever` and `mktod evaluate-retriever`, registered into the main parser by cli.py.

Handlers resolve paths and environment (the CLI's job) and call one library function each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from mktod.cli_common import (
    DATASETS,
    add_max_time_option,
    add_path_options,
    add_training_options,
    command_line,
    deadline_of,
    offline_data_paths,
)


def cmd_train_retriever(args: argparse.Namespace) -> int:
    started = time.monotonic()  # --max-time counts from here, loading included
    paths = offline_data_paths(args)  # before the imports below: the hub client reads it on import

    from mktod.config import load_config
    from mktod.retriever_config import RetrieverTrainConfig
    from mktod.train_retriever import train_retriever

    overrides = list(args.set or [])
    cfg = load_config(RetrieverTrainConfig, Path(args.config), overrides)
    result = train_retriever(
        cfg,
        paths,
        device=args.device,
        resume=args.resume,
        command=command_line(),
        deadline=deadline_of(started, args.max_time),
    )
    out: dict[str, object] = {
        "retriever": str(result.output),
        "start_step": result.start_step,
        "steps": result.steps,
        "last_loss": round(result.last_loss, 4),
        "out_of_time": result.out_of_time,
    }
    if result.dev is not None:
        out["dev"] = result.dev.as_dict()
    print(json.dumps(out, indent=2))
    return 0


def cmd_evaluate_retriever(args: argparse.Namespace) -> int:
    paths = offline_data_paths(args)

    from mktod.evaluate_retriever import evaluate_retriever

    scores = evaluate_retriever(
        args.dataset, args.setting, args.split, args.retriever, paths, limit=args.limit, device=args.device
    )
    print(json.dumps(scores.as_dict(), indent=2))
    return 0


def add_retriever_commands(subparsers: Any) -> None:
    """Register train-retriever and evaluate-retriever on the main parser's subparsers."""
    train = subparsers.add_parser(
        "train-retriever",
        help="train a dense retriever: distant-supervision warm-up, then optionally MML against a "
        "trained generator (resumable)",
    )
    add_path_options(train)
    add_training_options(train, "configs/retriever-mwoz.yaml", "warmup.lr=5e-5")
    add_max_time_option(train)
    train.set_defaults(handler=cmd_train_retriever)

    ev = subparsers.add_parser("evaluate-retriever", help="Recall@K of a retriever on a split")
    add_path_options(ev)
    ev.add_argument("--dataset", required=True, choices=DATASETS)
    ev.add_argument("--setting", required=True, choices=["condensed", "large"])
    ev.add_argument("--split", required=True, choices=["train", "dev", "test"])
    ev.add_argument(
        "--retriever", required=True, help="bm25, frequency, or a trained retriever folder (runs/.../final)"
    )
    ev.add_argument("--limit", type=int, help="only the first N dialogues (a quick check)")
    ev.add_argument("--device", default="cpu", help="torch device for a dense retriever (default cpu)")
    ev.set_defaults(handler=cmd_evaluate_retriever)
