from __future__ import annotations

import json
from pathlib import Path

import pytest

from mktod.errors import DataError
from mktod.kb import linearise, load_kb, save_kb
from mktod.types import KB, Record


def test_linearise_puts_name_first_and_reads_words() -> None:
    record = Record("r1", {"area": "centre", "name": "jinling_noodle_bar", "pricerange": "moderate"})
    assert linearise(record) == "name jinling noodle bar ; area centre ; pricerange moderate"


def test_round_trip_and_hostile_strings(tmp_path: Path) -> None:
    records = (
        Record("a", {"name": "x", "note": 'quote " and \\ backslash'}, domain="d"),
        Record("b", {"name": "<script>alert(1)</script>", "emoji": "é ✓ \u2028"}),
    )
    path = tmp_path / "kb.jsonl"
    save_kb(records, path)
    kb = load_kb(path)
    assert kb == KB(records, name="kb")
    assert path.read_text(encoding="utf-8").count("\n") == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{bad json", "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"fields": {"a": "b"}}', "'id' must be a non-empty string"),
        ('{"id": "x", "fields": {}}', "'fields' must be a non-empty object"),
        ('{"id": "x", "fields": {"a": 3}}', "fields.a must be a string"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "kb.jsonl"
    good = json.dumps({"id": "ok", "fields": {"name": "n"}})
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(DataError, match=message) as info:
        load_kb(path)
    assert f"{path}:2" in str(info.value)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    row = json.dumps({"id": "x", "fields": {"name": "n"}})
    path.write_text(f"{row}\n{row}\n")
    with pytest.raises(DataError, match="duplicate record id 'x'"):
        load_kb(path)
