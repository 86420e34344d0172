from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping

import pytest

from mktod.datasets import get_loader
from mktod.datasets.base import DataPaths
from mktod.datasets.mwoz import check_kb_coverage, coverage_problems
from mktod.errors import DataError
from mktod.types import KB, Dialogue, Record, Split, Turn

MakePaths = Callable[[Mapping[str, str]], DataPaths]  # the make_paths fixture (tests/datasets/conftest.py)

HOTEL = (
    "#hotel#\n"
    "0 74_chesterton_road north 01223350059 moderate 2_star 21 name ashley_hotel\n"
    "0 ashley_hotel address 74_chesterton_road\n"
    "0 ashley_hotel area north\n"
    "0 ashley_hotel phone 01223350059\n"
    "0 ashley_hotel pricerange moderate\n"
    "0 ashley_hotel stars 2_star\n"
    "0 ashley_hotel choice 21\n"
    "0 regent_street centre expensive name university_arms_hotel\n"
    "0 university_arms_hotel address regent_street\n"
    "0 university_arms_hotel area centre\n"
    "0 university_arms_hotel pricerange expensive\n"
    "1 a 2_star hotel in the north ?\tashley_hotel is a 2_star hotel .\t['ashley_hotel', '2_star']\n"
    "2 thanks\tbye\t[]\n"
)


def test_records_are_built_from_triples(make_paths: MakePaths) -> None:
    split = get_loader("mwoz").load_split("dev", make_paths({"mwoz/dfnet_txt/dev.txt": HOTEL}))
    (dialogue,) = split.dialogues
    assert (dialogue.id, dialogue.domain, len(dialogue.turns)) == ("dev-0000", "hotel", 2)
    ashley, arms = dialogue.kb.records
    assert dict(ashley.fields) == {
        "name": "ashley_hotel",
        "address": "74_chesterton_road",
        "area": "north",
        "phone": "01223350059",
        "pricerange": "moderate",
        "stars": "2_star",
        "choice": "21",
    }
    assert (ashley.id, ashley.domain) == ("dev-0000/0", "hotel")
    assert dict(arms.fields) == {
        "name": "university_arms_hotel",
        "address": "regent_street",
        "area": "centre",
        "pricerange": "expensive",
    }
    assert dialogue.turns[0].gold_entities == ("ashley_hotel", "2_star")


@pytest.mark.parametrize(
    ("kb", "line", "fragment"),
    [
        ("0 a_hotel area north\n", 2, "KB row before any entity"),
        ("0 north name a_hotel\n0 a_hotel area north\n0 a_hotel area south\n", 4, "'area' given twice"),
        (
            "0 north name a_hotel\n0 b_hotel area north\n",
            3,
            "expected a triple 'a_hotel <attribute> <value>'",
        ),
        ("0 north name a_hotel\n0 a_hotel area north extra\n", 3, "got 4 tokens"),
    ],
)
def test_malformed_kb_lines(make_paths: MakePaths, kb: str, line: int, fragment: str) -> None:
    paths = make_paths({"mwoz/dfnet_txt/test.txt": "#hotel#\n" + kb + "1 x\ty\t[]\n"})
    with pytest.raises(DataError, match=rf"test\.txt:{line}: ") as info:
        get_loader("mwoz").load_split("test", paths)
    assert fragment in str(info.value)


def test_domain_and_split_errors(make_paths: MakePaths) -> None:
    paths = make_paths({"mwoz/dfnet_txt/dev.txt": "#train#\n1 x\ty\t[]\n"})
    with pytest.raises(DataError, match=r"dev\.txt:1: unknown domain 'train'"):
        get_loader("mwoz").load_split("dev", paths)
    with pytest.raises(DataError, match="valid splits: train, dev, test"):
        get_loader("mwoz").load_split("validation", paths)
    with pytest.raises(DataError, match="missing MWOZ test split"):
        get_loader("mwoz").load_split("test", paths)


def _entity(rid: str, domain: str = "hotel", **fields: str) -> Record:
    return Record(id=rid, fields=fields, domain=domain)


def test_coverage_problems() -> None:
    rows = (
        _entity("dev-0000/0", name="a", area="north", choice="21", ref="x1"),  # maps onto hotel/a
        _entity("dev-0000/1", name="b", area="south"),  # value differs
        _entity("dev-0000/2", name="c", area="east"),  # unknown name
        _entity("dev-0000/3", name="d", area="west"),  # two identical entities
        _entity("dev-0000/4", name="e", area="west"),  # the entity has an attribute the row lacks
        _entity("dev-0000/5", domain="restaurant", name="a", area="north"),  # other domain
    )
    split = Split("mwoz", "dev", (Dialogue("dev-0000", "hotel", (Turn("u", "r"),), KB(rows)),))
    kb = KB(
        (
            _entity("hotel/a", name="a", area="north"),
            _entity("hotel/b", name="b", area="north"),
            _entity("hotel/d", name="d", area="west"),
            _entity("hotel/d2", name="d", area="west"),
            _entity("hotel/e", name="e", area="west", stars="4_star"),
        )
    )
    assert coverage_problems(split, kb) == [
        "dev dev-0000/1 (hotel b): values differ from hotel/b: area 'south' vs 'north'",
        "dev dev-0000/2 (hotel c): no dataset-level hotel entity of that name",
        "dev dev-0000/3 (hotel d): matches 2 entities (hotel/d, hotel/d2)",
        "dev dev-0000/4 (hotel e): values differ from hotel/e: stars None vs '4_star'",
        "dev dev-0000/5 (restaurant a): no dataset-level restaurant entity of that name",
    ]


EXPECTED = {"dev": (117, 576, 349), "test": (141, 711, 441)}


@pytest.mark.data
@pytest.mark.parametrize(("split", "cdnet"), [("dev", "val"), ("test", "test")])
def test_real_counts_and_cdnet_twin(data_paths: DataPaths, split: str, cdnet: str) -> None:
    data = get_loader("mwoz").load_split(split, data_paths)
    turns_with_entities = sum(1 for _, _, t in data.iter_turns() if t.gold_entities)
    assert (len(data.dialogues), data.num_turns, turns_with_entities) == EXPECTED[split]
    assert {len(d.kb) for d in data.dialogues} == {7}
    assert Counter(d.domain for d in data.dialogues).keys() <= {"restaurant", "hotel", "attraction"}
    # CDNet's JSON twin holds the same turns with the KB as dicts (choice and ref included).
    twin = json.loads((data_paths.data_dir / "mwoz" / "cdnet" / f"{cdnet}.json").read_text())
    assert len(twin) == data.num_turns
    canon = lambda rows: Counter(json.dumps(row, sort_keys=True) for row in rows)  # noqa: E731
    for (dialogue, _, turn), ref in zip(data.iter_turns(), twin, strict=True):
        assert canon(dict(r.fields) for r in dialogue.kb) == canon(ref["kb"]), dialogue.id
        assert list(turn.gold_entities) == ref["gold_entities"]
        assert turn.response == ref["output"]
    assert get_loader("mwoz").entity_file(data_paths).is_file()


@pytest.mark.data
def test_real_global_kb_covers_dev_test(data_paths: DataPaths) -> None:
    pytest.importorskip("mktod.datasets.mwoz_db")
    kb = get_loader("mwoz").global_kb(data_paths)
    assert kb is not None
    assert len(kb) == 222
    assert len({r.id for r in kb}) == len(kb)
    assert check_kb_coverage(data_paths) == []


@pytest.mark.data
def test_real_train_build(data_paths: DataPaths) -> None:
    pytest.importorskip("mktod.datasets.mwoz_train")
    data = get_loader("mwoz").load_split("train", data_paths)
    assert len(data.dialogues) == 1839
    assert {len(d.kb) for d in data.dialogues} == {7}
    assert 7500 < data.num_turns < 9500
