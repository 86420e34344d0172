"""`train`, `build-backbone` and `evaluate --checkpoint` through the standalone CLI entry point."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from train_helpers import path_args, write_data, write_tiny_config

from mktod.cli import main
from mktod.cli_train import add_checkpoint_arguments

torch.set_num_threads(1)


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out
    data: dict[str, object] = json.loads(out)
    return data


def test_train_then_evaluate_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, where = write_tiny_config(tmp_path, "run", "optim.max_steps=2")

    assert main(["train", "--config", str(config), *where, "--set", "optim.eval_every=1"]) == 0
    printed = capsys.readouterr()
    trained = json.loads(printed.out)
    assert printed.err.count("warning: generator.max_record_tokens = 24 cut") == 1  # said once
    assert trained["steps"] == 2 and trained["best"] == str(tmp_path / "run" / "best")

    best = tmp_path / "run" / "best"
    assert (
        main(["evaluate", "--checkpoint", str(best), "--dataset", "camrest", "--split", "test", *where]) == 0
    )
    printed = capsys.readouterr()
    scores = json.loads(printed.out)
    for key in ("bleu", "entity_f1", "entity_precision", "entity_recall", "recall@1", "recall@7", "turns"):
        assert key in scores
    assert scores["turns"] == 9 and scores["setting"] == "condensed"
    # generator.max_record_tokens=24 cuts the tiny config's tagged records: the evaluation says so.
    assert scores["max_record_tokens"] == 24 and scores["longest_record_tokens"] > 24
    assert 0 < scores["records_cut"] <= 100
    assert "warning: generator.max_record_tokens = 24 cut" in printed.err
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(0 < entry["records_cut"] <= 100 for entry in log)  # every entry: the share so far
    out = tmp_path / "run" / "eval" / "best-camrest-test-condensed"
    assert (out / "predictions.txt").read_text().count("\n") == 9 and (out / "records.jsonl").is_file()
    assert json.loads((out / "run.json").read_text())["entity_f1"] == scores["entity_f1"]

    # --k replaces the checkpoint's records per turn (e.g. the large-scale setting's 7).
    k_out = tmp_path / "k1"
    args = ["evaluate", "--checkpoint", str(best), "--dataset", "camrest", "--split", "test", *where]
    assert main([*args, "--k", "1", "--out", str(k_out)]) == 0
    assert _json(capsys)["k"] == 1 and scores["k"] == 2
    lines = (k_out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 9 and all(len(json.loads(line)["records"]) == 1 for line in lines)
    # Decoding: the checkpoint's by default (greedy, no n-gram ban), else the options', and said.
    assert (scores["num_beams"], scores["no_repeat_ngram_size"]) == (1, 0)
    assert main([*args, "--num-beams", "2", "--no-repeat-ngram", "2", "--out", str(tmp_path / "nr")]) == 0
    decoded = _json(capsys)
    assert (decoded["num_beams"], decoded["no_repeat_ngram_size"]) == (2, 2)
    with pytest.raises(SystemExit):
        main([*args, "--no-repeat-ngram", "-1"])
    assert "--no-repeat-ngram" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--k", "0"])
    assert exit_info.value.code == 2 and "--k: must be at least 1, got 0" in capsys.readouterr().err

    assert main(["evaluate", "--checkpoint", str(best), "--dataset", "smd", "--split", "test", *where]) == 2
    assert "trained on camrest" in capsys.readouterr().err
    assert main(["train", "--config", str(config), *where]) == 2  # output_dir holds a run: needs --resume
    assert "--resume" in capsys.readouterr().err


def test_build_backbone_t5_scratch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = write_data(tmp_path)
    where = path_args(paths)
    out = tmp_path / "t5"
    args = [
        "build-backbone",
        "--kind",
        "t5-scratch",
        "--size",
        "tiny",
        "--vocab-size",
        "200",
        "--out",
        str(out),
    ]
    assert main([*args, "--dataset", "camrest", *where]) == 0
    assert _json(capsys)["kind"] == "t5-scratch-tiny" and (out / "config.json").is_file()
    built = json.loads((out / "backbone.json").read_text())
    assert (built["tokenizer"], built["tokenizer_texts"], built["dataset"]) == ("bpe", "inputs", "camrest")
    assert main([*args, "--dataset", "camrest", *where]) == 2  # not empty: needs --force
    unigram = [*args, "--dataset", "camrest", "--tokenizer", "unigram", "--force", *where]
    assert main(unigram) == 0 and json.loads((out / "backbone.json").read_text())["tokenizer"] == "unigram"
    capsys.readouterr()
    assert main([*args, *where, "--force"]) == 2  # t5-scratch needs --dataset
    assert "--dataset" in capsys.readouterr().err


def test_build_backbone_bert2bert_with_copied_cross_attention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from retriever_helpers import save_tiny_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = save_tiny_model(tmp_path / "bert")
    out = tmp_path / "b2b"
    args = ["build-backbone", "--kind", "bert2bert", "--encoder", str(encoder), "--out", str(out)]
    assert main([*args, "--cross-attention", "self"]) == 0
    assert _json(capsys)["kind"] == "bert2bert"
    assert json.loads((out / "backbone.json").read_text())["cross_attention"] == "self"
    with pytest.raises(SystemExit):
        main([*args, "--force", "--cross-attention", "zero"])
    assert "--cross-attention: invalid choice: 'zero'" in capsys.readouterr().err


def test_checkpoint_arguments_share_options_the_evaluate_parser_already_has() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", default="condensed")
    parser.add_argument("--limit", type=int)
    add_checkpoint_arguments(parser)  # no conflict with the existing --setting / --limit
    args = parser.parse_args(["--checkpoint", "x", "--limit", "3"])
    assert (args.checkpoint, args.limit, args.setting, args.device, args.batch_size) == (
        "x",
        3,
        "condensed",
        "cpu",
        16,
    )


def test_train_max_time_takes_positive_minutes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, where = write_tiny_config(tmp_path, "timed", "optim.max_steps=2")
    args = ["train", "--config", str(config), *where]
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(SystemExit):
            main([*args, "--max-time", bad])
        assert "--max-time" in capsys.readouterr().err
    # An hour is plenty for two tiny steps: the run ends at max_steps, and says it was not cut short.
    assert main([*args, "--max-time", "60"]) == 0
    trained = _json(capsys)
    assert trained["steps"] == 2 and trained["out_of_time"] is False
