from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping

import pytest

from mktod.datasets import get_loader
from mktod.datasets.base import DataPaths
from mktod.datasets.smd import DAYS, WEATHER_COLUMNS
from mktod.errors import DataError

MakePaths = Callable[[Mapping[str, str]], DataPaths]  # the make_paths fixture (tests/datasets/conftest.py)

WEEK = "\t".join(f"w{i}\t{i}0f\t{i}5f" for i in range(7))
SMALL = (
    "#navigate#\n"
    "0 2_miles\tno_traffic\tgas_station\t91_el_camino_real\tvalero\n"
    "1 gas ?\tvalero , 2_miles away\t['valero', '2_miles']\n"
    "\n"
    "#schedule#\n"
    "0 <empty>\t<empty>\t5pm\twednesday\t<empty>\tdinner\n"
    "0 conference_room_100\tdiscuss_the_picnic\t7pm\twednesday\thr\tmeeting\n"
    "1 when is dinner ?\t5pm\t['5pm']\n"
    "\n"
    "#weather#\n"
    f"0 monday\t{WEEK}\tdanville\n"
    "1 weather ?\tw0 in danville\t['danville']\n"
    "\n"
    "#schedule#\n"
    "1 remind me\tok\t[]\n"
)


def _load(make_paths: MakePaths, text: str, split: str = "test") -> tuple[DataPaths, list[dict[str, str]]]:
    paths = make_paths({f"smd/eer_txt/{split}.txt": text})
    split_ = get_loader("smd").load_split(split, paths)
    return paths, [dict(r.fields) for d in split_.dialogues for r in d.kb]


def test_kb_rows_get_attribute_names_per_domain(make_paths: MakePaths) -> None:
    paths = make_paths({"smd/eer_txt/test.txt": SMALL})
    split = get_loader("smd").load_split("test", paths)
    assert (split.dataset, split.split, split.num_turns) == ("smd", "test", 4)
    nav, sched, weather, empty = split.dialogues
    assert [d.domain for d in split.dialogues] == ["navigate", "schedule", "weather", "schedule"]
    assert dict(nav.kb.records[0].fields) == {
        "distance": "2_miles",
        "traffic_info": "no_traffic",
        "poi_type": "gas_station",
        "address": "91_el_camino_real",
        "poi": "valero",
    }
    # <empty> marks a missing value; it is dropped as CDNet drops the key.
    assert dict(sched.kb.records[0].fields) == {"time": "5pm", "date": "wednesday", "event": "dinner"}
    assert sched.kb.records[1].fields["party"] == "hr"
    (row,) = weather.kb.records
    assert list(row.fields) == list(WEATHER_COLUMNS)
    assert (row.fields["location"], row.fields["today"]) == ("danville", "monday")
    assert [row.fields[f"{d}_weather"] for d in DAYS] == [f"w{i}" for i in range(7)]
    assert (row.fields["sunday_low"], row.fields["sunday_high"]) == ("60f", "65f")
    assert len(empty.kb) == 0
    assert nav.turns[0].gold_entities == ("valero", "2_miles")
    ids = [r.id for d in split.dialogues for r in d.kb]
    assert len(set(ids)) == len(ids)
    assert sched.kb.records[1].id == f"{sched.id}/1"
    assert {r.domain for r in sched.kb} == {"schedule"}


def test_wrong_width_row_and_missing_header_are_errors(make_paths: MakePaths) -> None:
    with pytest.raises(DataError, match=r"dev\.txt:2: navigate KB row has 4 values, expected 5"):
        _load(make_paths, "#navigate#\n0 a\tb\tc\td\n1 x\ty\t[]\n", "dev")
    with pytest.raises(DataError, match=r"dev\.txt:1: dialogue has no '#domain#' header"):
        _load(make_paths, "1 x\ty\t[]\n", "dev")
    with pytest.raises(DataError, match=r"dev\.txt:1: unknown domain 'hotel'"):
        _load(make_paths, "#hotel#\n1 x\ty\t[]\n", "dev")


def test_unknown_split_missing_file_and_no_global_kb(make_paths: MakePaths) -> None:
    paths = make_paths({})
    loader = get_loader("smd")
    with pytest.raises(DataError, match="valid splits: train, dev, test"):
        loader.load_split("val", paths)
    with pytest.raises(DataError, match=r"smd/eer_txt/train\.txt: missing SMD train split"):
        loader.load_split("train", paths)
    assert loader.global_kb(paths) is None
    with pytest.raises(DataError, match=r"kvret_entities\.json"):
        loader.entity_file(paths)


EXPECTED = {
    "train": (2425, 6290, 3515),
    "dev": (302, 777, 426),
    "test": (304, 807, 449),
}


@pytest.mark.data
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_real_counts(data_paths: DataPaths, split: str) -> None:
    data = get_loader("smd").load_split(split, data_paths)
    turns_with_entities = sum(1 for _, _, t in data.iter_turns() if t.gold_entities)
    assert (len(data.dialogues), data.num_turns, turns_with_entities) == EXPECTED[split]
    assert get_loader("smd").entity_file(data_paths).is_file()


@pytest.mark.data
@pytest.mark.parametrize(("split", "cdnet"), [("dev", "val"), ("test", "test")])
def test_columns_match_cdnet_kb_dicts(data_paths: DataPaths, split: str, cdnet: str) -> None:
    """CDNet's dev/test hold the same turns, line for line, with KB rows as dicts."""
    data = get_loader("smd").load_split(split, data_paths)
    reference = json.loads((data_paths.data_dir / "smd" / "cdnet" / f"{cdnet}.json").read_text())
    turns = list(data.iter_turns())
    assert len(turns) == len(reference)
    for (dialogue, _, _), ref in zip(turns, reference, strict=True):
        assert dialogue.domain == ref["type"]
        if dialogue.domain == "weather":
            # CDNet has one dict per (location, day); we keep one record per location.
            ours = [
                {
                    "location": r.fields["location"],
                    "date": day,
                    "weather_attribute": r.fields[f"{day}_weather"],
                    "low": r.fields[f"{day}_low"],
                    "high": r.fields[f"{day}_high"],
                }
                for r in dialogue.kb
                for day in DAYS
            ]
        else:
            ours = [dict(r.fields) for r in dialogue.kb]
        canon = lambda rows: Counter(json.dumps(row, sort_keys=True) for row in rows)  # noqa: E731
        assert canon(ours) == canon(ref["kb"]), dialogue.id


@pytest.mark.data
def test_weather_example_from_cdnet(data_paths: DataPaths) -> None:
    data = get_loader("smd").load_split("test", data_paths)
    danville = [r for d in data.dialogues for r in d.kb if r.fields.get("location") == "danville"]
    assert any(
        (r.fields["monday_weather"], r.fields["monday_low"], r.fields["monday_high"])
        == ("hot", "90f", "100f")
        for r in danville
    )
