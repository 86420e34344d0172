"""bench/quality/context_use.py: the gold response's likelihood with its own, another's and no input."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_helpers import load_bench_script
from train_helpers import path_args, tiny_config, write_data

from mktod.generators.base import GeneratorInput
from mktod.train import train

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    return load_bench_script("quality/context_use.py")


def test_summary_by_hand() -> None:
    script = _script()
    summary = script.summarise([-10.0, -20.0], [-12.0, -23.0], [-10.5, -20.5])
    assert summary == {
        "own": -15.0,
        "other_dialogue": -17.5,
        "no_records": -15.5,
        "gap_input": 2.5,
        "gap_records": 0.5,
    }
    with pytest.raises(ValueError, match="equally many"):
        script.summarise([-1.0], [], [-1.0])
    items = [GeneratorInput(str(i), ()) for i in range(4)]
    assert [x.context for x in script.shifted(items, 3)] == ["3", "0", "1", "2"]


def test_runs_on_a_trained_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_data(tmp_path)
    train(tiny_config(tmp_path, "run"), paths)
    script = _script()
    argv = ["--checkpoint", str(tmp_path / "run" / "best"), "--dataset", "camrest", "--split", "dev"]
    argv += ["--shift", "1", "--out", str(tmp_path / "out.jsonl")]
    argv += path_args(paths)
    assert script.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["turns"] > 1 and summary["own"] < 0 and summary["no_records"] < 0
    assert summary["gap_input"] == pytest.approx(summary["own"] - summary["other_dialogue"], abs=2e-3)
    assert json.loads((tmp_path / "out.jsonl").read_text()) == summary
    table = (tmp_path / "out.md").read_text()
    step = json.loads((tmp_path / "run" / "best" / "dev_scores.json").read_text())["step"]
    assert summary["step"] == step
    assert f"| `{tmp_path / 'run' / 'best'}` | {step} | camrest dev |" in table


def test_a_rerun_replaces_its_line_and_the_table_lists_all(tmp_path: Path) -> None:
    script = _script()
    out = tmp_path / "r.jsonl"
    base = {"dataset": "camrest", "split": "dev", "turns": 96, "shift": 37}
    numbers = script.summarise([-10.0], [-11.0], [-10.0])
    script.append(out, {"checkpoint": "a", **base, **numbers})
    script.append(out, {"checkpoint": "b", **base, **numbers})
    script.append(out, {"checkpoint": "a", **base, **script.summarise([-9.0], [-11.0], [-10.0])})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["checkpoint"], r["own"]) for r in rows] == [("b", -10.0), ("a", -9.0)]
    table = out.with_suffix(".md").read_text()
    assert "| `a` |  | camrest dev | 96 | -9.00 | -11.00 | -10.00 | +2.00 | +1.00 |" in table
