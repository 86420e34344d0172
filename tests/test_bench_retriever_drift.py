"""bench/quality/retriever_drift.py: the retriever half of the joint MML step against a blind generator,
run end to end on the 3-dialogue sample with a trained tiny retriever."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import torch
from bench_helpers import load_bench_script
from train_helpers import path_args, tiny_config, write_data

from mktod.datasets import get_loader
from mktod.retriever import Retriever, build_retriever
from mktod.train import train

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _script() -> ModuleType:
    return load_bench_script("quality/retriever_drift.py")


def test_drift_reports_recall_before_and_after(tmp_path: Path) -> None:
    paths = write_data(tmp_path)
    train(tiny_config(tmp_path, "run"), paths)
    retriever = str(tmp_path / "run" / "best" / "retriever")
    script = _script()
    out = tmp_path / "results"
    argv = ["--retriever", retriever, "--dataset", "camrest", "--noise", "0", "1", "--steps", "2"]
    argv += ["--batch-size", "2", "--k", "2", "--eval-every", "1", "--out", str(out)]
    argv += ["--precision", "fp32", "bf16"]
    argv += path_args(paths)
    assert script.main(argv) == 0

    report = json.loads((out / "retriever_drift.json").read_text(encoding="utf-8"))
    assert [(r["noise"], r["precision"], r["steps"]) for r in report["rows"]] == [
        (0.0, "fp32", 2),
        (1.0, "fp32", 2),
        (0.0, "bf16", 2),
        (1.0, "bf16", 2),
    ]
    # "before" is the checkpoint as saved: every row starts from a fresh copy of it.
    dev = get_loader("camrest").load_split("dev", paths)
    untouched = build_retriever(retriever)
    assert isinstance(untouched, Retriever)
    expected = script.recall_at_1(untouched, dev)
    assert all(r["recall@1_before"] == expected for r in report["rows"])
    assert all(0.0 <= r["recall@1_after"] <= 100.0 for r in report["rows"])
    assert all(
        [s for s, _ in r["trace"]] == [1, 2] and r["trace"][-1][1] == r["recall@1_after"]
        for r in report["rows"]
    )
    table = (out / "retriever_drift.md").read_text(encoding="utf-8")
    assert f"| 1.0 | fp32 | 2 | {expected:.2f} |" in table and "k 2" in table
    assert f"| 1.0 | bf16 | 2 | {expected:.2f} |" in table


def test_rows_with_the_same_settings_are_kept_and_replaced(tmp_path: Path) -> None:
    script = _script()
    settings = {"retriever": "r", "k": 2}

    def row(noise: float, precision: str, after: float) -> dict[str, object]:
        return {"noise": noise, "precision": precision, "steps": 2, "recall@1_before": 50.0,
                "recall@1_after": after, "trace": [[2, after]]}  # fmt: skip

    script.write_report([row(1.0, "fp32", 40.0), row(0.1, "bf16", 45.0)], settings, tmp_path)
    merged = script.merge_rows([row(1.0, "fp32", 30.0), row(0.0, "fp32", 50.0)], settings, tmp_path)
    # fp32 first, by noise; the re-measured fp32 1.0 row replaces its old one, the bf16 row stays.
    assert [(r["precision"], r["noise"], r["recall@1_after"]) for r in merged] == [
        ("fp32", 0.0, 50.0),
        ("fp32", 1.0, 30.0),
        ("bf16", 0.1, 45.0),
    ]
    # Other settings: the old rows describe another experiment and are dropped.
    assert script.merge_rows([row(0.0, "fp32", 50.0)], {"retriever": "other"}, tmp_path) == [
        row(0.0, "fp32", 50.0)
    ]
