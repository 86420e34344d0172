"""bench/record_budget/run.py: the record-budget table over training configs, end to end on the
3-dialogue sample through the real `mktod record-budget` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_helpers import load_bench_script
from train_helpers import path_args, tiny_config, write_data

from mktod.config import dump_config


def test_the_table_lists_each_split_and_the_configs_it_could_not_measure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = load_bench_script("record_budget/run.py")
    paths = write_data(tmp_path)
    cut, missing = tmp_path / "cut.yaml", tmp_path / "missing.yaml"
    dump_config(tiny_config(tmp_path, "run"), cut)  # max_record_tokens 24 cuts the sample's records
    dump_config(tiny_config(tmp_path, "run", f"generator.model={tmp_path / 'no-such-model'}"), missing)
    out = tmp_path / "out"
    where = path_args(paths)
    assert script.main(["--configs", str(cut), str(missing), "--out", str(out), *where]) == 0

    results = json.loads((out / "record_budget.json").read_text())
    measured = results[str(cut)]
    assert [s["split"] for s in measured["splits"]] == ["train", "dev", "test"]
    assert all(s["records_cut"] > 0 for s in measured["splits"])
    assert "no-such-model': no model folder at" in results[str(missing)]["error"]  # its last line

    md = (out / "record_budget.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(f"| `{cut}` |")]
    assert [row.split(" | ")[3] for row in rows] == ["train", "dev", "test"]
    test = measured["splits"][2]
    assert f"| {test['longest_record_tokens']} | {test['records_cut']:.1f}% |" in rows[2]
    assert f"- `{missing}`: " in md
    assert md in capsys.readouterr().out


def test_left_out_names_the_least_shown_fields_first() -> None:
    script = load_bench_script("record_budget/run.py")
    fields = {"name": 100.0, "food": 0.0, "area": 99.96, "phone": 0.0, "a": 1.0, "b": 2.5}
    assert script.left_out(fields) == "food 0%, phone 0%, a 1%, b 2.5% (+1 more)"
    assert script.left_out({"ref": 74.13, "name": 100.0, "choice": 99.96}) == "ref 74.13%, choice 99.96%"
    assert script.left_out({"name": 100.0}) == "none"


def test_naming_configs_keeps_the_other_configs_results_unless_their_file_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = load_bench_script("record_budget/run.py")
    paths = write_data(tmp_path)
    a, b, gone = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "gone.yaml"
    dump_config(tiny_config(tmp_path, "run"), a)
    dump_config(tiny_config(tmp_path, "run", "generator.max_record_tokens=200"), b)
    dump_config(tiny_config(tmp_path, "run"), gone)
    out, where = tmp_path / "out", path_args(paths)
    assert script.main(["--configs", str(b), str(gone), "--out", str(out), *where]) == 0
    gone.unlink()
    assert script.main(["--configs", str(a), "--out", str(out), *where]) == 0

    results = json.loads((out / "record_budget.json").read_text())
    assert list(results) == [str(a), str(b)]  # config order; gone.yaml's result dropped with its file
    assert [s["max_record_tokens"] for s in results[str(b)]["splits"]] == [200, 200, 200]
    assert all(s["records_cut"] == 0 for s in results[str(b)]["splits"])
    md = (out / "record_budget.md").read_text()
    assert f"| `{b}` | " in md and f"| `{a}` | " in md and str(gone) not in md
