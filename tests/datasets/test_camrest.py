from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pytest

from mktod.datasets import get_loader
from mktod.datasets.base import DataPaths
from mktod.datasets.camrest import COLUMNS, eer_postcode
from mktod.errors import DataError

MakePaths = Callable[[Mapping[str, str]], DataPaths]  # the make_paths fixture (tests/datasets/conftest.py)


def _row(name: str, phone: str = "01223_000000", area: str = "centre") -> str:
    return f"0 1_main_street\t{area}\tindian\t52.1,0.1\t{phone}\tc.b_1,_1_a.a\tcheap\t{name}\n"


def _dialogue(*rows: str) -> str:
    return "".join(rows) + "1 cheap indian ?\tkohinoor is cheap\t['kohinoor', 'cheap']\n2 bye\tbye\t[]\n"


def _tree() -> dict[str, str]:
    return {
        "camrest/eer_txt/train.txt": _dialogue(_row("kohinoor"), _row("ask")) + "\n" + _dialogue(_row("ask")),
        "camrest/eer_txt/dev.txt": _dialogue(_row("kohinoor", phone="01223_111111"), _row("zizzi")),
        "camrest/eer_txt/test.txt": _dialogue(_row("ask")),
        # CDNet's KBs: "ask" again (already known: not added twice) and "curry_king", seen only here.
        "camrest/cdnet/train.json": json.dumps([{"kb": []}, {"kb": [_cdnet("ask"), _cdnet("curry_king")]}]),
        "camrest/cdnet/val.json": json.dumps([{"kb": [_cdnet("curry_king")]}]),
        "camrest/cdnet/test.json": "[]",
    }


def _cdnet(name: str) -> dict[str, str]:
    return {
        "name": name,
        "address": "5_jordans_yard",
        "area": "centre",
        "food": "indian",
        "phone": "01223_324351",
        "pricerange": "expensive",
        "postcode": "cb21ug",
    }


def test_kb_columns_and_domain(make_paths: MakePaths) -> None:
    split = get_loader("camrest").load_split("train", make_paths(_tree()))
    assert [(d.id, d.domain, len(d.kb), len(d.turns)) for d in split.dialogues] == [
        ("train-0000", "restaurant", 2, 2),
        ("train-0001", "restaurant", 1, 2),
    ]
    record = split.dialogues[0].kb.records[0]
    assert list(record.fields) == list(COLUMNS)
    assert (record.id, record.domain, record.fields["name"], record.fields["postcode"]) == (
        "train-0000/0",
        "restaurant",
        "kohinoor",
        "c.b_1,_1_a.a",
    )
    assert split.dialogues[0].turns[0].gold_entities == ("kohinoor", "cheap")


def test_global_kb_is_the_deduplicated_union_with_stable_ids(make_paths: MakePaths) -> None:
    kb = get_loader("camrest").global_kb(make_paths(_tree()))
    assert kb is not None
    # "ask" appears in three dialogues but once here; kohinoor has two phone numbers: two records;
    # curry_king comes from CDNet's KBs, in EER's postcode spelling and without a location.
    assert [r.id for r in kb] == ["ask", "curry_king", "kohinoor", "kohinoor#2", "zizzi"]
    assert dict(kb.by_id("curry_king").fields) == {
        "address": "5_jordans_yard",
        "area": "centre",
        "food": "indian",
        "phone": "01223_324351",
        "postcode": "c.b_2,_1_u.g",
        "pricerange": "expensive",
        "name": "curry_king",
    }
    assert [r.fields["phone"] for r in kb if r.fields["name"] == "kohinoor"] == [
        "01223_000000",
        "01223_111111",
    ]
    assert kb.name == "camrest"
    again = get_loader("camrest").global_kb(make_paths(_tree()))
    assert again == kb


@pytest.mark.parametrize(
    ("cdnet", "eer"), [("cb21ug", "c.b_2,_1_u.g"), ("cb259aq", "c.b_25,_9_a.q"), ("CB2 1UG", "c.b_2,_1_u.g")]
)
def test_eer_postcode(cdnet: str, eer: str) -> None:
    assert eer_postcode(cdnet) == eer


def test_wrong_width_unknown_split_and_missing_files(make_paths: MakePaths) -> None:
    paths = make_paths({"camrest/eer_txt/dev.txt": "0 a\tb\n1 x\ty\t[]\n"})
    loader = get_loader("camrest")
    with pytest.raises(DataError, match=r"dev\.txt:1: restaurant KB row has 2 values, expected 8"):
        loader.load_split("dev", paths)
    with pytest.raises(DataError, match="unknown split 'valid'; valid splits: train, dev, test"):
        loader.load_split("valid", paths)
    with pytest.raises(DataError, match="missing CamRest test split"):
        loader.load_split("test", paths)
    with pytest.raises(DataError, match=r"camrest_entities\.json"):
        loader.entity_file(paths)


EXPECTED = {"train": (405, 1666, 1033), "dev": (135, 539, 339), "test": (136, 539, 330)}


@pytest.mark.data
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_real_counts_and_kbretriever_columns(data_paths: DataPaths, split: str) -> None:
    data = get_loader("camrest").load_split(split, data_paths)
    turns_with_entities = sum(1 for _, _, t in data.iter_turns() if t.gold_entities)
    assert (len(data.dialogues), data.num_turns, turns_with_entities) == EXPECTED[split]
    assert {len(d.kb) for d in data.dialogues} == {7}
    # The JSON twin names every column; it adds "type" (always restaurant) and an "id".
    twin = json.loads(
        (data_paths.data_dir / "camrest" / "kbretriever" / f"CamRest676_{split}.json").read_text()
    )
    assert len(twin) == len(data.dialogues)
    for dialogue, ref in zip(data.dialogues, twin, strict=True):
        items = [
            {k: v for k, v in it.items() if k not in ("id", "type")} for it in ref["scenario"]["kb"]["items"]
        ]
        assert [dict(r.fields) for r in dialogue.kb] == items, dialogue.id


@pytest.mark.data
def test_real_global_kb(data_paths: DataPaths) -> None:
    kb = get_loader("camrest").global_kb(data_paths)
    assert kb is not None
    # 91 restaurants in the dialogues (four of them with two phone numbers, eraina also with two
    # addresses) plus the 19 that only CDNet's KBs show: 110 restaurants in 114 rows.
    assert len(kb) == 114
    assert len({r.fields["name"] for r in kb}) == 110
    assert sorted(r.id for r in kb if "#" in r.id) == [
        "eraina#2",
        "golden_wok#2",
        "meze_bar_restaurant#2",
        "the_nirala#2",
    ]
    assert len({r.id for r in kb}) == len(kb)
