"""What every `mktod` subcommand shares: path options, their resolution and the offline default.

Only the CLI (and the service's settings) read environment variables; library code takes paths.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from mktod.datasets.base import DataPaths
from mktod.paths import default_cache_dir, default_data_dir

DATASETS = ("smd", "camrest", "mwoz")


def add_path_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="folder holding smd/, camrest/ and mwoz/ (default: $MKTOD_DATA_DIR, else ../shared/datasets "
        "beside the repository)",
    )
    p.add_argument(
        "--cache-dir", help="generated artefacts such as the MWOZ train build (default: data/cache)"
    )


def add_config_options(p: argparse.ArgumentParser, example_config: str, example_override: str) -> None:
    """--config and --set: a YAML config and its command-line overrides."""
    p.add_argument("--config", required=True, help=f"YAML config, e.g. {example_config}")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example_override} (repeatable)",
    )


def add_training_options(p: argparse.ArgumentParser, example_config: str, example_override: str) -> None:
    """--config, --set, --resume and --device, the same for every training command."""
    add_config_options(p, example_config, example_override)
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")


def _count(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type for counts such as --k: argparse then names the option in its error."""
    return _count(text, 1)


def positive_minutes(text: str) -> float:
    """An argparse type for a time budget in minutes, such as --max-time (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}")
    return value


def add_max_time_option(p: argparse.ArgumentParser) -> None:
    """--max-time, the same for both training commands (mktod.deadline has the rule)."""
    p.add_argument(
        "--max-time",
        type=positive_minutes,
        metavar="MINUTES",
        help="end within this many minutes of the command's start: stop after the last step that leaves "
        "time for another step and a due dev evaluation, evaluate, save a checkpoint (continue later "
        "with --resume). For a machine lent for a fixed time or a job scheduler's limit",
    )


def deadline_of(started: float, max_time: float | None) -> float | None:
    """The ``time.monotonic()`` time by which a command started at ``started`` must end."""
    return None if max_time is None else started + 60 * max_time


def non_negative_int(text: str) -> int:
    """An argparse type for counts where 0 means none, such as --demos."""
    return _count(text, 0)


def data_paths(args: argparse.Namespace) -> DataPaths:
    data_dir = args.data_dir or os.environ.get("MKTOD_DATA_DIR") or default_data_dir()
    cache_dir = args.cache_dir or os.environ.get("MKTOD_CACHE_DIR") or default_cache_dir()
    return DataPaths(data_dir=Path(data_dir), cache_dir=Path(cache_dir))


def offline_data_paths(args: argparse.Namespace) -> DataPaths:
    """``data_paths`` for commands that load models: Hugging Face Hub access is off unless asked for.

    The offline defaults (the bundled MiniLM, local backbones) need no network, and without this a hub
    id would hang on network timeouts. A user with hub access (``t5-base``) sets HF_HUB_OFFLINE=0.
    Call it before importing transformers: the hub client reads the variable on import.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return data_paths(args)


def command_line() -> str:
    """The command as the user typed it, saved beside checkpoints."""
    return shlex.join(["mktod", *sys.argv[1:]]) if sys.argv[1:] else ""
