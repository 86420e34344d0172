"""bench/tokenizer/run.py: each from-scratch tokenizer built by the real `mktod build-backbone` and
measured on the 3-dialogue CamRest sample, with `mktod record-budget` on the CamRest T5 config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_helpers import load_bench_script
from train_helpers import path_args, write_data


def test_the_table_measures_every_tokenizer_variant_on_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = load_bench_script("tokenizer/run.py")
    where = path_args(write_data(tmp_path))
    out = tmp_path / "out"
    assert script.main(["--datasets", "camrest", "--out", str(out), *where]) == 0

    results = json.loads((out / "tokenizer.json").read_text())
    assert [(r["tokenizer"], r["tokenizer_texts"]) for r in results] == list(script.VARIANTS)
    by = {r["tokenizer"] + "/" + r["tokenizer_texts"]: r for r in results}
    bpe, unigram = by["bpe/inputs"], by["unigram/inputs"]
    # The sample's test responses are words of its training split: BPE keeps most of them whole,
    # unigram splits the ones that are part of no other word.
    assert 1.0 <= bpe["pieces_per_word"] < unigram["pieces_per_word"]
    assert bpe["one_piece_words"] > unigram["one_piece_words"]
    assert bpe["longest_record_tokens"] < unigram["longest_record_tokens"]
    assert all(r["max_record_tokens"] == 48 and 0.0 <= r["records_cut"] <= 100.0 for r in results)
    assert all(r["budget_config"] == "configs/camrest-condensed-prompt-t5-cpu.yaml" for r in results)

    md = (out / "tokenizer.md").read_text()
    row = f"| camrest | bpe | inputs | {bpe['vocab_size']} | {bpe['pieces_per_word']:.2f} |"
    assert row in md and md in capsys.readouterr().out


def test_a_failing_command_stops_the_run_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_bench_script("tokenizer/run.py")
    with pytest.raises(SystemExit, match=r"mktod record-budget --config no-such\.yaml: .*no-such\.yaml"):
        script.mktod(["record-budget", "--config", "no-such.yaml"])
