"""Fixtures for the dataset tests: tiny data trees written into tmp_path, and the real data's paths."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from mktod.datasets.base import DataPaths

MakePaths = Callable[[Mapping[str, str]], DataPaths]


@pytest.fixture
def make_paths(tmp_path: Path) -> MakePaths:
    """Write ``{relative path: text}`` under a fresh data dir and return its DataPaths."""

    def make(files: Mapping[str, str]) -> DataPaths:
        data = tmp_path / "data"
        for rel, text in files.items():
            path = data / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        data.mkdir(exist_ok=True)
        return DataPaths(data_dir=data, cache_dir=tmp_path / "cache")

    return make


@pytest.fixture(scope="session")
def data_paths(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> DataPaths:
    """The real datasets (``data_dir`` from tests/conftest.py skips without them), a throwaway cache."""
    return DataPaths(data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))
