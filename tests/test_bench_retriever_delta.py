"""bench/retriever_delta/run.py: a trained tiny retriever written as 4- and 8-bit deltas, loaded back and
compared with its full weights on the 3-dialogue sample."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from bench_helpers import load_bench_script
from train_helpers import path_args, tiny_config, write_data

from mktod.datasets import get_loader
from mktod.evaluate_retriever import score_split
from mktod.retriever import Retriever
from mktod.train import train

torch.set_num_threads(1)


def test_deltas_are_measured_against_the_full_weights(tmp_path: Path) -> None:
    paths = write_data(tmp_path)
    train(tiny_config(tmp_path, "run", "optim.max_steps=2"), paths)
    retriever = tmp_path / "run" / "best" / "retriever"
    out = tmp_path / "results"
    argv = ["--retriever", str(retriever), "--split", "dev", "--out", str(out), *path_args(paths)]
    assert load_bench_script("retriever_delta/run.py").main(argv) == 0

    report = json.loads((out / "retriever_delta.json").read_text(encoding="utf-8"))
    names = [v["version"] for v in report["versions"]]
    assert names == ["full weights", "4-bit delta", "8-bit delta", "base encoder, untuned"]
    full, four, eight, base = report["versions"]
    # The full row is the checkpoint's own Recall@1, as `mktod evaluate-retriever` computes it.
    split = get_loader("camrest").load_split("dev", paths)
    expected = score_split(Retriever.load(retriever), split, None, (1,)).recall[1]
    assert full["recall@1"] == round(expected, 2)
    assert four["bytes"] < eight["bytes"] < full["bytes"]
    assert 0 < report["weight_shift"] < 1
    for delta in (four, eight):
        assert 0 <= delta["max_score_difference"] < 0.05 and 0 <= delta["same_order_pct"] <= 100
    assert eight["max_score_difference"] <= four["max_score_difference"]
    assert "max_score_difference" in base and base["bytes"] is None
    table = (out / "retriever_delta.md").read_text(encoding="utf-8")
    assert "| 8-bit delta |" in table and report["command"].startswith("python bench/retriever_delta/run.py")
