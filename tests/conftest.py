"""Shared fixtures: where the real datasets are (tests that need them skip cleanly without them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MKTOD_DATA_DIR") or REPO.parent / "shared" / "datasets")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "smd").is_dir():
        pytest.skip(f"shared datasets not found at {path}")
    return path
