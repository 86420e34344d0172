"""bench/quality/run_local.py: a row's record outlives its run folder (runs/ is not kept between
machines), and a recorded interval is reused only while both rows still have the scores it came from."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from bench_helpers import load_bench_script

from mktod.significance import PairedDifference

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    return load_bench_script("quality/run_local.py")


def _findings() -> ModuleType:
    """findings.py, the prose beside run_local.py (importable once _script() has put its folder on
    sys.path)."""
    _script()
    return importlib.import_module("findings")


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script with its repository root, results folder and record moved into ``tmp_path``."""
    module = _script()
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "RESULTS", results)
    monkeypatch.setattr(module, "RECORD", results / "quality_local.json")
    monkeypatch.setattr(module, "KEPT", results / "quality_local")
    monkeypatch.setattr(module, "CONTEXT_USE", results / "context_use.jsonl")
    monkeypatch.setattr(module, "machine", lambda: "test machine")
    return module


def _row(script: ModuleType, name: str = "ft-x", train_run: str = "runs/train-x") -> Any:
    return script.Row(name, f"label of {name}", f"runs/{name}/best", "camrest", "mktod train ...", train_run)


def _write_run(script: ModuleType, row: Any, predictions: list[str], f1: float = 30.0) -> dict[str, Any]:
    """What `mktod evaluate` leaves in the row's output folder."""
    folder = script.out_dir(row)
    folder.mkdir(parents=True)
    (folder / "predictions.txt").write_text("\n".join(predictions) + "\n", encoding="utf-8")
    run = {
        "dataset": row.dataset,
        "split": row.split,
        "k": 6,
        "bleu": 5.0,
        "entity_f1": f1,
        "recall@1": 80.0,
        "recall@7": 100.0,
        "turns": len(predictions),
        "wall_s": 12.0,
        "predictions": str((folder / "predictions.txt").relative_to(script.ROOT)),
        "command": f"mktod evaluate --checkpoint {row.checkpoint}",
    }
    (folder / "run.json").write_text(json.dumps(run), encoding="utf-8")
    return run


def _write_training(script: ModuleType, row: Any) -> None:
    """A training run's config and log: two dev evaluations, the second one logged twice (a resume)."""
    folder = script.ROOT / row.train_run
    folder.mkdir(parents=True)
    config = {"optim": {"batch_size": 4, "grad_accum": 2, "eval_limit": 40}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    entries = [
        {"step": 5, "loss": 1.0},
        {"step": 10, "dev": {"entity_f1": 12.5, "recall@1": 70.0}},
        {"step": 20, "dev": {"entity_f1": 9.0, "recall@1": 60.0}},
        {"step": 20, "dev": {"entity_f1": 11.0, "recall@1": 65.0}},
    ]
    (folder / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")


def test_measure_derives_the_columns_and_keeps_the_predictions(script: ModuleType) -> None:
    row = _row(script)
    said = ["the phone is 01223", "user: hi", "name x ; area y ; food z", "the phone is 01223"]
    run = _write_run(script, row, said)
    _write_training(script, row)
    record = script.measure(row, run)
    assert record["shares"] == {"distinct": 75.0, "echoes_context": 25.0, "copies_record": 25.0}
    assert record["common_responses"][0] == "the phone is 01223"
    # Turns seen = step x batch 4 x accumulation 2; the re-logged step 20 keeps its last entry.
    assert record["dev_curve"]["points"] == [(80, 12.5), (160, 11.0)]
    assert record["dev_curve"]["recall@1"] == [(80, 70.0), (160, 65.0)]
    assert record["dev_curve"]["dev_turns"] == "first 40 dev turns"
    assert record["dev_best"] == [80, 12.5]
    kept = script.ROOT / record["kept_predictions"]
    assert kept.read_text(encoding="utf-8").splitlines() == said


def test_a_row_whose_run_is_gone_is_taken_from_its_record(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = _row(script)
    monkeypatch.setattr(script, "ROWS", (row,))
    monkeypatch.setattr("sys.argv", ["run_local.py"])
    (script.ROOT / row.checkpoint).mkdir(parents=True)  # the checkpoint exists: run.json is reused
    _write_run(script, row, ["a", "b"], f1=42.42)
    assert script.main() == 0
    first = json.loads(script.RECORD.read_text(encoding="utf-8"))
    assert [r["row"] for r in first["rows"]] == ["ft-x"]

    # A new machine: no runs/ at all. The row stays, with the columns measured on the first one.
    for path in sorted((script.ROOT / "runs").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    assert script.main() == 0
    second = json.loads(script.RECORD.read_text(encoding="utf-8"))
    assert second["rows"] == first["rows"]
    text = (script.RESULTS / "quality.md").read_text(encoding="utf-8")
    assert "| label of ft-x | see below | 2 | 42.42 | 5.00 | 80.00 | 100% | 0% | 0% | 12 |" in text
    assert "Machine: test machine." in text


def _recorded_interval(f1_first: float, f1_second: float) -> dict[str, Any]:
    return {
        "dataset": "camrest",
        "first": "ft-prompt-mml",
        "second": "ft-prompt-nll",
        "f1_first": f1_first,
        "f1_second": f1_second,
        "difference": -1.5,
        "low": -7.0,
        "high": 4.0,
        "confidence": 0.95,
        "draws": 2000,
        "groups": 25,
    }


@pytest.mark.parametrize(("f1_first", "reused"), [(26.0, True), (31.0, False)])
def test_a_recorded_interval_is_reused_only_for_the_same_scores(
    script: ModuleType, f1_first: float, reused: bool
) -> None:
    rows = [_row(script, "ft-prompt-mml"), _row(script, "ft-prompt-nll")]
    results = [
        (rows[0], {"dataset": "camrest", "split": "test", "turns": 100, "entity_f1": f1_first}),
        (rows[1], {"dataset": "camrest", "split": "test", "turns": 100, "entity_f1": 27.5}),
    ]
    recorded = script.Recorded(
        {}, {("camrest", "ft-prompt-mml", "ft-prompt-nll"): _recorded_interval(26.0, 27.5)}
    )
    intervals = script.compute_intervals(results, recorded)
    key = ("camrest", "ft-prompt-mml", "ft-prompt-nll")
    if reused:
        assert intervals == {key: PairedDifference(-1.5, -7.0, 4.0, 0.95, 2000, 25)}
        assert script.interval_records(intervals, results) == [_recorded_interval(26.0, 27.5)]
    else:  # the first row was evaluated again since: its old interval no longer describes it
        assert intervals == {}


def test_large_scale_rows_get_their_own_table_with_recall_at_7(script: ModuleType) -> None:
    condensed, large = _row(script, "lora-warmup-condensed"), _row(script, "lora-warmup-large")
    shares = {"distinct": 90.0, "echoes_context": 1.0, "copies_record": 2.0}
    base = {"dataset": "camrest", "split": "test", "turns": 100, "bleu": 5.0, "wall_s": 60.0}
    results = [
        (condensed, {**base, "setting": "condensed", "k": 6, "entity_f1": 30.0, "recall@1": 88.0,
                     "recall@7": 100.0, "shares": shares}),
        (large, {**base, "setting": "large", "k": 7, "entity_f1": 25.0, "recall@1": 60.0,
                 "recall@7": 97.0, "shares": shares}),
    ]  # fmt: skip
    d = PairedDifference(5.0, -1.0, 11.0, 0.95, 2000, 25)
    script.write_markdown(results, {("camrest", "lora-warmup-condensed", "lora-warmup-large"): d})
    text = (script.RESULTS / "quality.md").read_text(encoding="utf-8")
    condensed_table, _, large_table = text.partition("### CamRest, large-scale KB")
    assert (
        "| label of lora-warmup-condensed | see below | 100 | 30.00 | 5.00 | 88.00 | 90% |" in condensed_table
    )
    assert "label of lora-warmup-large" not in condensed_table
    assert (
        "| label of lora-warmup-large | see below | 100 | 25.00 | 5.00 | 60.00 | 97.00 | 90% |" in large_table
    )
    assert (
        "| paper: MK-TOD prompt (T5-Base) | full train set | all | 71.67 | 26.69 | | 92.24 |" in large_table
    )
    assert (
        "condensed (k = 6) 30.00 / 5.00, large-scale (K = 7) 25.00 / 5.00 (Entity F1 / BLEU); "
        "Entity F1 difference +5.00, 95% interval [-1.00, +11.00]; Recall@1 88.00 vs 60.00, "
        "Recall@7 100.00 vs 97.00." in text
    )


def test_large_scale_training_is_compared_with_the_condensed_trained_adapter(script: ModuleType) -> None:
    condensed, large = _row(script, "lora-warmup-condensed"), _row(script, "lora-warmup-large")
    trained = _row(script, "ft-large-prompt-mml")
    base = {"dataset": "camrest", "split": "test", "turns": 100, "bleu": 5.0, "recall@7": 97.0}
    results = [
        (condensed, {**base, "setting": "condensed", "k": 6, "entity_f1": 30.0, "recall@1": 88.0}),
        (large, {**base, "setting": "large", "k": 7, "entity_f1": 25.0, "recall@1": 60.0}),
    ]
    findings = _findings()
    before = "\n".join(findings.setting_lines(results, {}))
    assert "large-scale training (configs/*-large-*.yaml) is what the paper's" in before
    results.append(
        (trained, {**base, "setting": "large", "k": 7, "entity_f1": 33.5, "bleu": 6.25, "recall@1": 64.0,
                   "recall@7": 98.0})
    )  # fmt: skip
    d = PairedDifference(8.5, 1.0, 16.0, 0.95, 2000, 25)
    text = "\n".join(
        findings.setting_lines(results, {("camrest", "ft-large-prompt-mml", "lora-warmup-large"): d})
    )
    assert "the next comparison trains the same config on large-scale ones." in text
    assert (
        "CamRest training KB setting (SmolLM2 + LoRA, prompt, NLL + MML, the same training turns, "
        "learning rates and seed; both scored on the dataset-level KB, K = 7): trained on top-7 "
        "retrievals from the dataset-level KB (its retriever trained jointly) 33.50 / 6.25, trained on "
        "each dialogue's own KB (the 240-turn adapter shipped before, over the warm-up retriever; it was "
        "trained with whole records, the large-scale run with records cut at 48 tokens) 25.00 / 5.00 "
        "(Entity F1 / BLEU); Entity F1 difference +8.50, 95% interval [+1.00, +16.00]; "
        "Recall@1 64.00 vs 60.00, Recall@7 98.00 vs 97.00." in text
    )
    no_interval = "\n".join(findings.setting_lines(results, {}))
    assert "(Entity F1 / BLEU); no interval: the predictions of the runs were not kept;" in no_interval


def test_dropout_comparison_names_both_runs_scores_and_recall(script: ModuleType) -> None:
    fixed = replace(_row(script, "b2b-prompt-mml"), label="BERT2BERT (MiniLM) FiD, prompt, NLL + MML")
    old = _row(script, "b2b-prompt-mml-dropout")
    base = {"dataset": "camrest", "split": "test", "turns": 539}
    results = [
        (fixed, {**base, "entity_f1": 9.5, "bleu": 8.0, "recall@1": 80.25}),
        (old, {**base, "entity_f1": 6.33, "bleu": 8.57, "recall@1": 34.29}),
    ]
    d = PairedDifference(3.17, 0.5, 6.0, 0.95, 2000, 135)
    findings = _findings()
    lines = findings.dropout_lines(results, {("camrest", "b2b-prompt-mml", "b2b-prompt-mml-dropout"): d})
    text = " ".join(lines)
    assert lines[1].startswith("CamRest BERT2BERT (MiniLM) FiD, MML's likelihoods without dropout")
    assert "9.50 / 8.00 against 6.33 / 8.57" in text
    assert "Entity F1 difference +3.17, 95% interval [+0.50, +6.00]" in text
    assert "test Recall@1 80.25 against 34.29 (+45.96)" in text
    assert findings.dropout_lines(results[:1], {}) == []  # one run alone: nothing to compare


def test_dev_recall_curves_cover_rows_that_logged_recall(script: ModuleType, tmp_path: Path) -> None:
    with_recall, without = _row(script, "b2b-prompt-mml"), _row(script, "ft-prompt-mml")
    curve = {"dev_turns": "first 100 dev turns", "points": [[400, 0.0], [800, 1.5]]}
    results = [
        (with_recall, {"dev_curve": {**curve, "recall@1": [[400, 81.5], [800, 80.0]]}}),
        (without, {"dev_curve": {**curve, "recall@1": []}}),
    ]
    recall = script.dev_curves(results, "recall@1")
    assert list(recall) == ["CamRest"]  # one panel per dataset
    assert list(recall["CamRest"].values()) == [[(400, 81.5), (800, 80.0)]]
    assert len(script.dev_curves(results)["CamRest"]) == 2  # every row has an F1 curve
    script.plot(recall, tmp_path / "recall.png", "dev Recall@1")
    assert (tmp_path / "recall.png").stat().st_size > 0
    assert any(script.RECALL_FIGURE in line for line in script.figure_lines(results))


def test_a_seq2seq_row_states_how_much_its_checkpoint_reads_its_input(script: ModuleType) -> None:
    row = script.Row(
        "b2b-selfx-prompt-mml",
        "label",
        "runs/b2b/best",
        "camrest",
        "mktod train ...",
        backbone="bert2bert-selfx",
    )
    record = {
        "turns": 539,
        "entity_f1": 20.0,
        "bleu": 9.0,
        "recall@1": 85.0,
        "recall@7": 100.0,
        "k": 6,
        "shares": {"distinct": 40.0},
        "common_responses": ["sure"],
    }
    assert not any("Reading its input" in line for line in script.seq2seq_lines([(row, record)], {}, []))
    measured = {"checkpoint": "runs/b2b/best", "split": "dev", "turns": 96, "gap_input": 3.5}
    lines = [
        {**measured, "split": "test", "gap_records": 9.0},  # a dev measurement is preferred
        {**measured, "gap_input": 1.0, "gap_records": 0.5},  # replaced by the later dev line
        {**measured, "gap_records": 2.25},
        {**measured, "checkpoint": "runs/other/best", "gap_records": 7.0},
    ]
    script.CONTEXT_USE.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    text = " ".join(script.seq2seq_lines([(row, record)], {}, script.context_use_rows()))
    assert "on the first 96 dev turns this checkpoint gives the gold response +3.50 nats" in text
    assert "+2.25 over the context alone (bench/results/context_use.md)" in text


@pytest.mark.parametrize(
    ("retriever", "start", "spec"),
    [
        (
            {"init": None, "encoder": {"model": "all-MiniLM-L6-v2"}},
            "the untuned sentence encoder",
            "encoder:",
        ),
        ({"init": "runs/retriever-camrest"}, "the warm-up retriever", "runs/retriever-camrest"),
    ],
)
def test_the_retriever_a_run_started_from_is_named_and_scored(
    script: ModuleType, retriever: dict[str, Any], start: str, spec: str
) -> None:
    """A run that starts from the encoder as it comes (SMD's, ``init: null``) is compared with that
    encoder; one that starts from a warm-up run, with the warm-up retriever. Scores come from the cache
    `mktod evaluate-retriever` fills, so nothing is evaluated here."""
    row = _row(script)
    folder = script.ROOT / row.train_run
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"retriever": retriever}), encoding="utf-8")
    if retriever["init"]:
        (script.ROOT / retriever["init"] / "final").mkdir(parents=True)
    name = Path(retriever["init"]).name if retriever["init"] else "all-MiniLM-L6-v2"
    cached = script.ROOT / "runs" / "quality" / f"camrest-test-{name}.json"
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps({"recall@1": 75.5, "recall@5": 99.0}), encoding="utf-8")
    warm = script.warmup_recall(row)
    assert warm["start"].startswith(start) and f"--retriever {spec}" in warm["command"]
    record = {
        "turns": 4,
        "entity_f1": 5.0,
        "bleu": 4.0,
        "recall@1": 80.0,
        "recall@7": 100.0,
        "k": 8,
        "shares": {"distinct": 50.0},
        "common_responses": ["sure"],
        "warmup_recall": warm,
    }
    seq2seq = script.Row(row.name, "label", row.checkpoint, "smd", "mktod train ...", backbone="bert2bert")
    text = " ".join(script.seq2seq_lines([(seq2seq, record)], {}, []))
    assert f"Recall@1 80.00 and Recall@8 100.00 on these turns, not below {start}" in text
    assert "it started from (Recall@1 75.50, Recall@5 99.00;" in text


def test_a_comparison_without_an_interval_says_why(script: ModuleType) -> None:
    findings = _findings()

    def run(f1: float, kept: bool, turns: int = 100) -> dict[str, Any]:
        path = "bench/results/quality_local/x.txt" if kept else None
        return {"entity_f1": f1, "bleu": 3.0, "recall@1": 77.0, "split": "test", "turns": turns,
                "kept_predictions": path}  # fmt: skip

    def sentence(a: dict[str, Any], b: dict[str, Any]) -> str:
        rows = [
            (script.Row("ft-prompt-mml", "l", "runs/a/best", "smd", "t"), a),
            (script.Row("ft-none-mml", "l", "runs/b/best", "smd", "t"), b),
        ]
        lines: list[str] = findings.ablation_lines(rows, {})
        return next(line for line in lines if "meta-knowledge ablation" in line)

    assert "17.49 / 3.00 (Entity F1 / BLEU); no interval: the first run's predictions were not kept;" in (
        sentence(run(35.5, kept=False), run(17.49, kept=True))
    )
    assert "no interval: the runs scored different turns" in sentence(run(35.5, True), run(17.5, True, 90))
    assert "no interval: the predictions of the runs were not kept" in sentence(run(1, False), run(2, False))


def test_a_retrained_run_restates_its_first_runs_comparisons_with_an_interval(script: ModuleType) -> None:
    findings = _findings()

    def run(f1: float, kept: bool) -> dict[str, Any]:
        path = "bench/results/quality_local/x.txt" if kept else None
        return {"entity_f1": f1, "bleu": 3.0, "recall@1": 77.0, "split": "test", "turns": 100,
                "kept_predictions": path}  # fmt: skip

    rerun = script.Row("ft-prompt-mml-rerun", "l", "runs/c/best", "smd", "t", rerun_of="ft-prompt-mml")
    rows = [
        (script.Row("ft-prompt-mml", "l", "runs/a/best", "smd", "t"), run(35.54, kept=False)),
        (rerun, run(35.68, kept=True)),
        (script.Row("ft-none-mml", "l", "runs/b/best", "smd", "t"), run(17.49, kept=True)),
    ]
    d = PairedDifference(18.19, 8.76, 27.77, 0.95, 2000, 25)
    lines: list[str] = findings.ablation_lines(rows, {("smd", "ft-prompt-mml-rerun", "ft-none-mml"): d})
    ablation = [line for line in lines if line.startswith("SMD SmolLM2 meta-knowledge ablation")]
    assert len(ablation) == 2
    assert "no interval: the first run's predictions were not kept" in ablation[0]
    assert "(same data, steps and seed; prompt meta knowledge: the retrained run): prompt meta " \
        "knowledge 35.68 / 3.00" in ablation[1]  # fmt: skip
    assert "Entity F1 difference +18.19, 95% interval [+8.76, +27.77]" in ablation[1]
    retraining = next(line for line in lines if line.startswith("SMD SmolLM2 retraining"))
    assert "original 35.54 / 3.00, retrained 35.68 / 3.00" in retraining
    assert "no interval: the first run's predictions were not kept" in retraining
    assert "1 of the 1 Entity F1 intervals exclude 0: SMD meta-knowledge ablation" in "\n".join(lines)


def test_a_fine_tuned_run_scored_in_both_settings_is_named_for_what_it_is(script: ModuleType) -> None:
    """MWOZ has no shipped adapter: its condensed-trained run, scored on the dataset-level KB, is the
    retrained prompt run with its own retriever, and the sentences say so."""
    condensed = script.Row("ft-prompt-mml-rerun", "l", "runs/a/best", "mwoz", "t", rerun_of="ft-prompt-mml")
    large = script.Row("ft-prompt-mml-rerun-large", "l", "runs/a/best", "mwoz", "t")
    trained = script.Row("ft-large-prompt-mml", "l", "runs/b/best", "mwoz", "t")
    base = {"split": "test", "turns": 100, "bleu": 2.0, "recall@7": 90.0, "recall@1": 60.0}
    results = [
        (condensed, {**base, "setting": "condensed", "k": 6, "entity_f1": 9.0}),
        (large, {**base, "setting": "large", "k": 7, "entity_f1": 7.0}),
        (trained, {**base, "setting": "large", "k": 7, "entity_f1": 8.0}),
    ]
    text = "\n".join(_findings().setting_lines(results, {}))
    assert "MultiWOZ 2.1 KB setting (the same fine-tuned generator and its jointly trained retriever): " \
        "condensed (k = 6) 9.00 / 2.00, large-scale (K = 7) 7.00 / 2.00" in text  # fmt: skip
    assert "trained on each dialogue's own KB (the retrained prompt run, over its jointly trained " \
        "retriever) 7.00 / 2.00" in text  # fmt: skip
    assert "shipped adapter" not in text
