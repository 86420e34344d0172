"""`mktod serve`: the dialogue service (``service/``) on uvicorn, with a pipeline from a training checkpoint.

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

NO_PIPELINE = (
    "no pipeline to serve: no trained offline pipeline ships with MK-TOD yet. Train one "
    "(e.g. `mktod train --config configs/smoke.yaml`) and pass its checkpoint folder with "
    "`mktod serve --checkpoint runs/NAME/best`, or set MKTOD_PIPELINE=runs/NAME/best"
)


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
    return merged


def cmd_serve(args: argparse.Namespace) -> int:
    from service.settings import Settings

    settings = Settings.from_env(service_environment(args, os.environ))
    if settings.pipeline is None:
        raise ConfigError(NO_PIPELINE)
    if not settings.pipeline.is_dir():
        raise ConfigError(f"{settings.pipeline}: no such checkpoint folder ({NO_PIPELINE})")
    # Model loading needs no network; without this a hub id would hang on timeouts (see cli_common).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import uvicorn

    from mktod.checkpoint import load_pipeline
    from service.app import create_app

    pipeline = load_pipeline(settings.pipeline, args.device)
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
        help="a `mktod train` checkpoint folder, e.g. runs/NAME/best ($MKTOD_PIPELINE); required, "
        "no trained pipeline ships yet",
    )
    p.add_argument("--device", default="cpu", help="torch device for the pipeline (default cpu)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=cmd_serve)
