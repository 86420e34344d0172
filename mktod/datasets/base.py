"""The dataset protocol and registry: every dataset module registers one loader here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mktod.errors import DataError
from mktod.types import KB, Split

SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class DataPaths:
    """Where datasets are read from and where generated artefacts (e.g. the MWOZ train build) go."""

    data_dir: Path
    cache_dir: Path


class DatasetLoader(Protocol):
    name: str

    def load_split(self, split: str, paths: DataPaths) -> Split:
        """Load one split (``train`` / ``dev`` / ``test``) into typed dialogues."""
        ...

    def global_kb(self, paths: DataPaths) -> KB | None:
        """The dataset-level (large-scale) KB, or None where the literature has none (SMD)."""
        ...

    def entity_file(self, paths: DataPaths) -> Path:
        """The global entity list used by Entity F1."""
        ...


_REGISTRY: dict[str, DatasetLoader] = {}


def register(loader: DatasetLoader) -> DatasetLoader:
    _REGISTRY[loader.name] = loader
    return loader


def get_loader(name: str) -> DatasetLoader:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise DataError(name, f"unknown dataset {name!r}; known datasets: {known}") from None


def dataset_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def require_file(path: Path, what: str) -> Path:
    """Fail early, with the path and what it should be, when a dataset file is missing."""
    if not path.is_file():
        raise DataError(
            path,
            f"missing {what}; set --data-dir or MKTOD_DATA_DIR to the folder that holds "
            "smd/, camrest/ and mwoz/ (see README, 'Data')",
        )
    return path
