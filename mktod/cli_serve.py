"""`mktod serve`: the dialogue service (``service/``) on uvicorn.

With no arguments it serves the pipeline shipped in the package (SmolLM2-135M + a LoRA adapter trained
on CamRest, the bundled MiniLM retriever) over the demo KB in ``kb/``; ``--checkpoint`` serves any
``mktod train`` checkpoint instead, and MKTOD_GENERATOR=openai swaps in a chat LLM as the generator.

Settings come from, lowest precedence first: the ``--config`` file (``MKTOD_*=value`` lines, the same
names as the environment variables), the environment, then the command-line flags.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mktod.errors import ConfigError


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments are skipped, values may be quoted."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw.strip()!r}")
        if not key.startswith("MKTOD_"):
            raise ConfigError(f"{path}:{number}: {key} is not a service setting (they start with MKTOD_)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def service_environment(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``MKTOD_*`` variables the service sees: config file, then the environment, then the flags."""
    merged = read_env_file(Path(args.config)) if args.config else {}
    merged.update(environ)
    if args.state_dir:
        merged["MKTOD_STATE_DIR"] = args.state_dir
    if args.checkpoint:
        merged["MKTOD_PIPELINE"] = args.checkpoint
    if args.threads is not None:
        merged["MKTOD_THREADS"] = str(args.threads)
    return merged


def cmd_serve(args: argparse.Namespace) -> int:
    from service.serving import pipeline_dir
    from service.settings import Settings

    settings = Settings.from_env(service_environment(args, os.environ))
    pipeline_dir(settings)  # fail fast, before the slow imports, when there is nothing to serve
    # Model loading needs no network; without this a hub id would hang on timeouts (see cli_common).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import uvicorn

    from service.app import create_app
    from service.serving import load_service_pipeline

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    pipeline = load_service_pipeline(settings, args.device)
    app = create_app(settings, pipeline)
    config: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": args.log_level}
    uvicorn.run(app, **config)
    return 0


def add_serve_commands(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the dialogue service (REST chat, sessions, KB, OpenAI-compatible /v1/chat/completions)",
        description="Run the dialogue service on uvicorn. Settings: the --config file, then MKTOD_* "
        "environment variables, then these flags (flags win).",
    )
    p.add_argument("--config", metavar="FILE", help="file of MKTOD_*=value lines (lowest precedence)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--state-dir", metavar="DIR", help="where the SQLite store lives ($MKTOD_STATE_DIR)")
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="a `mktod train` checkpoint folder, e.g. runs/NAME/best ($MKTOD_PIPELINE); default: the "
        "pipeline shipped in the package",
    )
    p.add_argument(
        "--threads", type=int, help="torch CPU threads for inference ($MKTOD_THREADS; default torch's)"
    )
    p.add_argument("--device", default="cpu", help="torch device for the pipeline (default cpu)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=cmd_serve)
