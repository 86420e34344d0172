"""The `mktod` command as a user runs it: exit codes, JSON output and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mktod.cli import main
from mktod.datasets import DataPaths, get_loader
from mktod.evaluate import read_predictions, references, write_predictions


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predictions_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    write_predictions(path, ["a b", "", "c"])
    assert read_predictions(path) == ["a b", "", "c"]
    with pytest.raises(ValueError, match="prediction 2 contains a line break"):
        write_predictions(path, ["ok", "two\nlines"])


@pytest.mark.data
@pytest.mark.parametrize("dataset", ["smd", "camrest", "mwoz"])
def test_evaluate_references_score_100(
    dataset: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = get_loader(dataset).load_split("test", DataPaths(data_dir, tmp_path))
    preds = tmp_path / "refs.txt"
    write_predictions(preds, references(split))
    code, out, _ = run(
        capsys,
        "evaluate",
        "--dataset",
        dataset,
        "--split",
        "test",
        "--predictions",
        str(preds),
        "--data-dir",
        str(data_dir),
    )
    assert code == 0
    result = json.loads(out)
    assert result["bleu"] == 100.0
    assert result["entity_f1"] == 100.0
    assert result["turns"] == {"smd": 807, "camrest": 539, "mwoz": 711}[dataset]


@pytest.mark.data
def test_evaluate_rejects_wrong_line_count(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = tmp_path / "short.txt"
    preds.write_text("one\ntwo\n")
    code, out, err = run(
        capsys,
        "evaluate",
        "--dataset",
        "smd",
        "--split",
        "test",
        "--predictions",
        str(preds),
        "--data-dir",
        str(data_dir),
    )
    assert code == 2
    assert out == ""
    assert "has 2 predictions for 807 system turns of smd test" in err and "pass --limit N" in err
    assert str(preds) in err


def test_missing_data_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = tmp_path / "p.txt"
    preds.write_text("x\n")
    code, _, err = run(
        capsys,
        "evaluate",
        "--dataset",
        "camrest",
        "--split",
        "dev",
        "--predictions",
        str(preds),
        "--data-dir",
        str(tmp_path / "nowhere"),
    )
    assert code == 2
    assert "missing CamRest dev split" in err
    assert "--data-dir" in err


def test_missing_predictions_file(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "evaluate",
        "--dataset",
        "camrest",
        "--split",
        "dev",
        "--predictions",
        str(tmp_path / "no.txt"),
        "--data-dir",
        str(data_dir),
    )
    assert code == 2
    assert "predictions file not found" in err


@pytest.mark.data
def test_data_stats_json(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "data",
        "stats",
        "--json",
        "--dataset",
        "camrest",
        "--data-dir",
        str(data_dir),
        "--cache-dir",
        str(tmp_path),
    )
    assert code == 0
    rows = json.loads(out)
    test_row = next(r for r in rows if r["split"] == "test")
    assert test_row["system_turns"] == 539


def test_env_var_sets_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MKTOD_DATA_DIR", str(tmp_path / "from-env"))
    preds = tmp_path / "p.txt"
    preds.write_text("x\n")
    code, _, err = run(capsys, "evaluate", "--dataset", "smd", "--split", "dev", "--predictions", str(preds))
    assert code == 2
    assert str(tmp_path / "from-env") in err


@pytest.mark.data
def test_compare_bootstraps_the_entity_f1_difference(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = get_loader("camrest").load_split("test", DataPaths(data_dir, tmp_path))
    refs = references(split)[:100]
    gold, blank = tmp_path / "gold.txt", tmp_path / "blank.txt"
    write_predictions(gold, refs)
    write_predictions(blank, ["i am sorry"] * len(refs))
    args = ["compare", "--dataset", "camrest", "--split", "test", "--data-dir", str(data_dir)]

    code, out, _ = run(capsys, *args, "--limit", "100", str(gold), str(gold))
    assert code == 0
    same = json.loads(out)
    assert same["entity_f1_difference"] == 0.0 and same["interval"] == [0.0, 0.0]
    assert same["turns"] == 100 and same["dialogues"] > 1 and not same["excludes_zero"]

    code, out, _ = run(capsys, *args, "--limit", "100", str(gold), str(blank))
    better = json.loads(out)
    assert code == 0 and better["first"]["entity_f1"] == 100.0 and better["second"]["entity_f1"] == 0.0
    assert better["entity_f1_difference"] == 100.0 and better["excludes_zero"]

    code, out, err = run(capsys, *args, str(gold), str(blank))  # 100 lines, but no --limit
    assert code == 2 and out == ""
    assert "has 100 predictions for 539 system turns of camrest test; pass --limit N" in err

    # evaluate scores such a file too: the first 100 turns, as `evaluate --checkpoint --limit 100` wrote it
    score = ["evaluate", "--dataset", "camrest", "--split", "test", "--data-dir", str(data_dir)]
    code, out, _ = run(capsys, *score, "--predictions", str(gold), "--limit", "100")
    assert code == 0 and json.loads(out)["entity_f1"] == 100.0 and json.loads(out)["turns"] == 100
    code, out, err = run(capsys, *score, "--predictions", str(blank), "--limit", "99")
    assert code == 2 and "has 100 predictions for 99 system turns of camrest test" in err
