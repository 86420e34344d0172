"""mktod.record_budget and `mktod record-budget`: how a record budget cuts a dataset's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config, write_tiny_config

from mktod.cli import main
from mktod.generators.base import build_generator
from mktod.meta import MetaMode, TaggedRecord, render
from mktod.record_budget import (
    BudgetReport,
    FieldShare,
    RecordTokens,
    format_report,
    longest_tagging,
    measure,
    shown_fields,
    split_records,
    tag_variants,
)
from mktod.types import KB, Dialogue, Record, Split, Turn

torch.set_num_threads(1)

RESTAURANT = Record("r1", {"area": "centre", "name": "golden_wok", "food": "chinese"})


def words(mode: MetaMode = "prompt") -> RecordTokens:
    """A whitespace tokenizer over the real rendering: token counts a reader can check by eye."""

    def tokens(tagged: TaggedRecord) -> list[int]:
        return list(range(len(render(tagged, mode).split())))

    return tokens


def test_every_tagging_a_record_can_get_at_k() -> None:
    variants = tag_variants(RESTAURANT, 2)
    assert len(variants) == 3 * 3 * 2  # ranks 1, 2 and the negative; 3 confidences; old or new
    assert sum(v.negative for v in variants) == 6
    assert {v.rank for v in variants if not v.negative} == {1, 2}
    # Prompt mode: "The negative entity recalled:" (4 words) beats "The top-1 recalled:" (3), and
    # "existed in history:" (3) beats "newly recalled:" (2).
    longest = longest_tagging(RESTAURANT, 2, words())
    assert longest.negative
    assert render(longest, "prompt").startswith(
        "The negative entity recalled: with high confidence: existed in history: name golden wok"
    )


def test_fields_are_shown_in_their_written_order_until_the_budget_runs_out() -> None:
    tagged = longest_tagging(RESTAURANT, 2, words())
    # 4 + 3 + 3 tag words, then "name golden wok ;" "area centre ;" "food chinese" (linearise puts the
    # name first, then the record's own order).
    assert render(tagged, "prompt").endswith("name golden wok ; area centre ; food chinese")
    assert shown_fields(tagged, words(), 19) == (19, ["name", "area", "food"])
    assert shown_fields(tagged, words(), 18) == (19, ["name", "area"])  # "; food chinese" ends at 19
    assert shown_fields(tagged, words(), 15) == (19, ["name"])  # "; area centre" ends at 16
    assert shown_fields(tagged, words(), 12) == (19, [])  # the name alone needs 13


def test_measure_counts_repeats_but_renders_each_entity_once() -> None:
    calls = 0
    inner = words()

    def counting(tagged: TaggedRecord) -> list[int]:
        nonlocal calls
        calls += 1
        return inner(tagged)

    hotel = Record("h1", {"name": "acorn_guest_house", "area": "north"})
    again = Record("r9", dict(RESTAURANT.fields))  # the same entity under another dialogue's id
    report = measure([RESTAURANT, hotel, again, RESTAURANT], counting, cap=17, k=2)
    assert (report.records, report.unique) == (4, 2)
    assert report.lengths == (17, 19, 19, 19)  # hotel: 10 tag words + "name acorn guest house ; area north"
    assert report.cut == 3
    # The 18 taggings once, then per distinct record the whole rendering and, for the one the budget
    # cuts (the restaurant, 19 > 17), one rendering per field up to the first that does not fit.
    assert calls == 18 + (1 + 3) + 1
    shares = {f.field: (f.records, f.shown) for f in report.fields}
    assert shares == {"name": (4, 4), "area": (4, 4), "food": (3, 0)}
    summary = report.summary()
    assert summary["records_cut"] == 75.0 and summary["longest_record_tokens"] == 19
    assert (summary["tokens_p50"], summary["tokens_p90"]) == (19, 19)
    assert summary["fields_shown"] == {"name": 100.0, "area": 100.0, "food": 0.0}
    text = format_report(report, "title")
    assert "cut at max_record_tokens = 17: 75.0% of the records" in text
    assert "--set generator.max_record_tokens=19" in text
    with pytest.raises(ValueError, match="max_record_tokens must be >= 1"):
        measure([RESTAURANT], words(), cap=0, k=2)


def test_nearest_rank_percentiles_and_an_empty_split() -> None:
    report = BudgetReport(10, 4, 4, (1, 2, 3, 40), (FieldShare("name", 4, 3),))
    assert [report.percentile(q) for q in (25, 50, 75, 90, 100)] == [1, 2, 3, 40, 40]
    assert report.fields[0].percent == 75.0
    empty = measure([], words(), cap=10, k=2).summary()
    assert empty["records"] == 0 and empty["records_cut"] == 0.0 and empty["longest_record_tokens"] == 0
    assert "to show every record whole" not in format_report(measure([], words(), 10, 2), "t")


def test_condensed_records_count_once_per_turn_and_the_large_kb_once() -> None:
    kb = KB((RESTAURANT, Record("r2", {"name": "the_missing_sock"})))
    dialogue = Dialogue("d1", "restaurant", (Turn("hi", "hello"), Turn("food?", "chinese")), kb)
    split = Split("camrest", "test", (dialogue,))
    assert [r.id for r in split_records(split, None)] == ["r1", "r2", "r1", "r2"]
    assert [r.id for r in split_records(split, KB((RESTAURANT,)))] == ["r1"]


def test_the_generator_measures_with_its_own_tokenizer(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "run")
    generator = build_generator(cfg.generator, cfg.meta)
    tagged = longest_tagging(RESTAURANT, 2, generator.record_tokens)  # type: ignore[attr-defined]
    whole = generator.record_tokens(tagged)  # type: ignore[attr-defined]
    report = measure([RESTAURANT], generator.record_tokens, cap=len(whole), k=2)  # type: ignore[attr-defined]
    assert report.lengths == (len(whole),) and report.cut == 0
    assert all(f.percent == 100.0 for f in report.fields)
    assert measure([RESTAURANT], generator.record_tokens, len(whole) - 1, 2).cut == 1  # type: ignore[attr-defined]


def test_record_budget_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, where = write_tiny_config(tmp_path, "run")  # generator.max_record_tokens=24 cuts its records
    args = ["record-budget", "--config", str(config), *where]

    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["dataset"], out["setting"], out["meta_mode"]) == ("camrest", "condensed", "prefix")
    assert [s["split"] for s in out["splits"]] == ["train", "dev", "test"]
    test = out["splits"][2]
    assert test["max_record_tokens"] == 24 and test["records"] > 0 and test["records_cut"] > 0
    assert test["fields_shown"]["name"] == 100.0 and min(test["fields_shown"].values()) < 100.0
    longest = max(s["longest_record_tokens"] for s in out["splits"])

    whole = [*args, "--split", "test", "--split", "test", "--set", f"generator.max_record_tokens={longest}"]
    assert main(whole) == 0
    text = capsys.readouterr().out
    assert text.count("camrest test, condensed KBs, prefix meta knowledge") == 1  # a split once
    assert f"cut at max_record_tokens = {longest}: 0.0% of the records" in text
    assert "to show every record whole" not in text

    assert main([*args, "--split", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
