"""bench/quality/reply_modes.py: closing replies where none is due and echoes of the previous system turn,
counted against each turn of the split and beside the references' own rates."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_helpers import load_bench_script
from train_helpers import path_args, write_data

from mktod.datasets import get_loader


@pytest.fixture
def script() -> ModuleType:
    return load_bench_script("quality/reply_modes.py")


def test_overlap_f1_by_hand(script: ModuleType) -> None:
    assert script.overlap_f1("a b c", "a b c") == 1.0
    assert script.overlap_f1("a b", "c d") == 0.0
    # 2 words in common: precision 2/4, recall 2/2, F1 = 2/3.
    assert script.overlap_f1("a b x y", "b a") == pytest.approx(2 / 3)


def test_counts_by_hand(script: ModuleType) -> None:
    turn = script.Turn
    turns = [
        turn(True, "the address is 5 main st", ""),
        turn(False, "you re welcome", "the address is 5 main st"),
        turn(True, "what city ?", ""),
        turn(False, "it is sunny in alhambra", "what city ?"),
    ]
    replies = [
        "you are welcome",  # closing on a first turn: misplaced
        "no problem !",  # closing where it is due
        "what city ?",
        "what city do you want ?",  # echoes the previous system turn, not the reference
    ]
    got = script.count(replies, turns)
    assert got["turns"] == 4
    assert got["closing"] == 50.0 and got["closing_due"] == 25.0
    assert got["closing_misplaced"] == pytest.approx(100 / 3, abs=0.05)  # 1 of the 3 not-due turns
    assert got["closing_first"] == 50.0  # 1 of the 2 first turns
    assert got["echoes_previous"] == 50.0  # 1 of the 2 later turns
    # The references themselves: closing where due only, never an echo.
    refs = script.count([t.reference for t in turns], turns)
    assert refs["closing_misplaced"] == 0.0 and refs["echoes_previous"] == 0.0
    # Fewer replies than turns: the first N turns (as `mktod evaluate --limit N` writes them).
    assert script.count(replies[:1], turns)["closing_first"] == 100.0
    with pytest.raises(ValueError, match="5 replies but the split has 4 turns"):
        script.count([*replies, "x"], turns)


def test_writes_json_table_and_plot_from_the_kept_predictions(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_data(tmp_path)
    split = get_loader("camrest").load_split("test", paths)
    references = [turn.response for _, _, turn in split.iter_turns()]
    kept = tmp_path / "kept.txt"
    kept.write_text("\n".join(["you are welcome"] * 2) + "\n", encoding="utf-8")
    record = tmp_path / "quality_local.json"
    row = {"dataset": "camrest", "split": "test", "row": "ft-x", "label": "x", "entity_f1": 12.5}
    other = {**row, "dataset": "smd", "row": "elsewhere"}  # another dataset: not counted
    gone = {**row, "row": "gone", "kept_predictions": "missing.txt"}  # predictions not here: skipped
    rows = [{**row, "kept_predictions": "kept.txt"}, other, gone]
    record.write_text(json.dumps({"rows": rows, "comparisons": []}), encoding="utf-8")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.setattr(script, "RECORD", record)

    out = tmp_path / "results" / "modes"
    assert script.main(["--dataset", "camrest", "--out", str(out), *path_args(paths)]) == 0
    written = json.loads(out.with_suffix(".json").read_text())
    assert [r["row"] for r in written["rows"]] == ["references", "ft-x"]
    assert written["rows"][1]["turns"] == 2 and written["rows"][1]["closing"] == 100.0
    assert written["rows"][0]["turns"] == 2  # the references over the turns the rows cover
    assert len(references) >= 2
    table = out.with_suffix(".md").read_text()
    assert "| ft-x | 2 | 12.50 | 100.0 |" in table and "| references | 2 |  |" in table
    assert out.with_suffix(".png").stat().st_size > 0

    record.write_text(json.dumps({"rows": [other], "comparisons": []}), encoding="utf-8")
    with pytest.raises(SystemExit, match="no row"):
        script.main(["--dataset", "camrest", "--out", str(out), *path_args(paths)])
