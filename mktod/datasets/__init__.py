"""Dataset loaders (SMD, CamRest, MultiWOZ 2.1) behind one registry.

Importing this package registers every built-in dataset.
"""

from __future__ import annotations

from mktod.datasets import camrest, mwoz, smd  # noqa: F401  (registers the loaders)
from mktod.datasets.base import SPLITS, DataPaths, dataset_names, get_loader

__all__ = ["SPLITS", "DataPaths", "dataset_names", "get_loader"]
