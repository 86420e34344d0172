"""Default locations of the data directory and of generated artefacts.

Only the CLI and the service resolve environment variables; library code takes paths as arguments.
"""

from __future__ import annotations

from pathlib import Path


def repo_root() -> Path | None:
    """The source checkout this package runs from (editable install), or None when installed."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else None


def default_data_dir() -> Path:
    """``../shared/datasets`` beside the repository (or beside the working directory)."""
    root = repo_root() or Path.cwd()
    return (root.parent / "shared" / "datasets").resolve()


def default_cache_dir() -> Path:
    """``data/cache`` inside the repository (git-ignored), or ``./data/cache`` when installed."""
    root = repo_root() or Path.cwd()
    return root / "data" / "cache"


def default_manifest() -> Path:
    root = repo_root() or Path.cwd()
    return root / "data" / "manifest.json"


DEFAULT_PIPELINE = "smollm2-camrest-lora"


def default_pipeline_dir() -> Path:
    """The trained pipeline shipped inside the package (``mktod/pretrained/``): what ``mktod serve``
    serves and ``make run`` evaluates when no checkpoint is named."""
    return Path(__file__).resolve().parent / "pretrained" / DEFAULT_PIPELINE
