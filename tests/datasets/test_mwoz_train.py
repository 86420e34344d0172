"""The MWOZ train build: normalisation, gold entities, condensed KBs, the text format and the cache."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

import mktod.datasets.mwoz_train as mwoz_train
from mktod.datasets.base import DataPaths
from mktod.datasets.mwoz_normalise import EntityLexicon, build_lexicon, gold_entities, normalise_utterance
from mktod.datasets.mwoz_train import (
    KB_SIZE,
    build_train,
    build_train_text,
    ensure_train_file,
    manifest_path,
    read_counts,
    read_graphdialog,
    train_file_path,
)
from mktod.datasets.mwoz_train_check import dev_agreement
from mktod.errors import DataError
from mktod.types import Record

MakePaths = Callable[[Mapping[str, str]], DataPaths]  # the make_paths fixture of tests/datasets/conftest.py

RESTAURANT_NAMES = [
    "pizza hut city centre",
    "pizza hut cherry hinton",
    "golden wok",
    "curry garden",
    "nandos",
    "the gandhi",
    "kohinoor",
    "rice boat",
    "bedouin",
]


def _restaurant(index: int, name: str) -> dict[str, str]:
    return {
        "address": f"{index} Regent Street City Centre",
        "area": "centre" if index % 2 else "south",
        "food": "italian",
        "name": name,
        "phone": f"0122332373{index}",
        "postcode": f"cb2{index}ab",
        "pricerange": "cheap",
        "type": "restaurant",
    }


HOTELS = [
    {
        "address": "sleeperz hotel, station road",
        "area": "centre",
        "name": "rosa's bed and breakfast",
        "phone": "01223512596",
        "postcode": "cb11su",
        "pricerange": "cheap",
        "stars": "4",
        "type": "guesthouse",
    },
    {
        "address": "365 milton road",
        "area": "north",
        "name": "lovell lodge",
        "phone": "01223425478",
        "postcode": "cb41sr",
        "pricerange": "moderate",
        "stars": "2",
        "type": "hotel",
    },
]
ATTRACTIONS = [
    {
        "address": "sleeperz hotel, station road",
        "area": "centre",
        "name": "station museum",
        "phone": "01223000000",
        "postcode": "cb11aa",
        "pricerange": "?",
        "type": "museum",
    }
]
GLOBAL = {
    "name": ["pizza hut city centre", "pizza hut", "golden wok", "rosa ' s bed and breakfast"],
    "area": ["centre", "south", "north"],
    "food": ["italian", "modern european"],
    "pricerange": ["cheap", "free", "<DontKnow>"],
    "stars": ["4 star", "2 star"],
    "choice": ["3", "to", "many", "a lot of", "all"],
    "ref": ["AB12CD34"],
    "phone": ["01223323731"],
    "postcode": ["cb21ab"],
}
TRAIN = """#restaurant#
1 i want italian food in the centre	pizza hut city centre is cheap i m sure you ll like it
2 what s the postcode ?	it s c.b 2 1 a.b and the phone is 01223 323731 do you want golden wok instead ?
3 book pizza hut city centre please	done your reference number is : ab12cd34

#train#
1 i need a train	there are 3 trains

#hotel#
1 somewhere with 4 stars	rosa s bed and breakfast is at sleeperz hotel station road

"""
RESTAURANT_RECORDS_JSON = json.dumps([_restaurant(i, n) for i, n in enumerate(RESTAURANT_NAMES, start=1)])


def tiny_files(train: str = TRAIN) -> dict[str, str]:
    return {
        "mwoz/graphdialog_nokb_txt/train.txt": train,
        "mwoz/dfnet_txt/global_entities.json": json.dumps(GLOBAL),
        "mwoz/multiwoz_db/restaurant_db.json": RESTAURANT_RECORDS_JSON,
        "mwoz/multiwoz_db/hotel_db.json": json.dumps(HOTELS),
        "mwoz/multiwoz_db/attraction_db.json": json.dumps(ATTRACTIONS),
    }


def lexicon(domain: str, make_paths: MakePaths) -> EntityLexicon:
    from mktod.datasets.mwoz_db import load_db_records

    return build_lexicon(GLOBAL, load_db_records(make_paths(tiny_files())), domain)


@pytest.fixture
def restaurant_lexicon(make_paths: MakePaths) -> EntityLexicon:
    return lexicon("restaurant", make_paths)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Longest first: the full name wins over "pizza hut" and "centre".
        ("I like pizza hut city centre in the centre", "i like pizza_hut_city_centre in the centre ."),
        ("is pizza hut open ?", "is pizza_hut open ?"),
        # Whole tokens only: "pizza hutch" and "centres" are not entities.
        ("pizza hutch has centres", "pizza hutch has centres ."),
        ("it has 4 stars", "it has 4_star ."),
        ("a four-star place !", "a 4_star place !"),
        ("modern european food", "modern_european food ."),
        # Multi-word counts stay as words.
        ("there are a lot of places", "there are a lot of places ."),
        ("i m sure it s fine and they don t mind", "i ' m sure it ' s fine and they don ' t mind ."),
        ("the t stop", "the t stop ."),
        ("postcode c.b 2 1 a.b phone 01223 323731", "postcode cb21ab phone 01223323731 ."),
        ("postcode c b 2 5 9 a q", "postcode cb259aq ."),
        ("ok.book it,please", "ok book it please ."),
        ("booked , ref: x", "booked ref: x ."),
    ],
)
def test_normalise_utterance(restaurant_lexicon: EntityLexicon, text: str, expected: str) -> None:
    assert normalise_utterance(text, restaurant_lexicon) == expected


def test_dialogue_domain_decides_clashing_forms(make_paths: MakePaths) -> None:
    # The hotel row keeps its comma attached (DF-Net's hotel form); the attraction row splits it.
    text = "it is at sleeperz hotel station road"
    assert (
        normalise_utterance(text, lexicon("hotel", make_paths)).split()[3] == "sleeperz_hotel,_station_road"
    )
    assert normalise_utterance(text, lexicon("attraction", make_paths)).split()[3] == (
        "sleeperz_hotel_,_station_road"
    )
    rosa = normalise_utterance("rosa s bed and breakfast", lexicon("hotel", make_paths))
    assert rosa == "rosa_'_s_bed_and_breakfast ."


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("there are 3 italian places in the centre , 3 in the south .", ("3", "italian", "centre", "south")),
        ("pizza_hut_city_centre and pizza_hut are cheap .", ("pizza_hut_city_centre", "pizza_hut", "cheap")),
        # Counts only after "there are" / "found" / "have"; "to" never; "how many" is a question.
        ("book for 3 people , how many nights ?", ()),
        ("i can take you to the south .", ("south",)),
        ("it is free and has free wifi .", ("free",)),
        ("all of the places are cheap .", ("all", "cheap")),
        ("your reference number is : ab12cd34 .", ("ab12cd34",)),
        ("the reference number is zzqqwwee .", ("zzqqwwee",)),
        ("can i help with anything else ? reference is ok .", ()),
        ("rosa_'_s_bed_and_breakfast has 4_star .", ("rosa_'_s_bed_and_breakfast", "4_star")),
    ],
)
def test_gold_entities(restaurant_lexicon: EntityLexicon, response: str, expected: tuple[str, ...]) -> None:
    assert gold_entities(response, restaurant_lexicon) == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("#restaurant#\n1 hi\tbye\nnot a turn\n", 3, "expected 'N user<TAB>system'"),
        ("1 hi\tbye\n", 1, "inside a dialogue opened by '#domain#'"),
        ("#hotel#\n1 hi there\n", 2, "expected 'N user<TAB>system'"),
        ("#hotel#\n1 a\tb\tc\n", 2, "expected 'N user<TAB>system'"),
        ("#hotel#\n2 a\tb\n", 2, "turn number 2, expected 1"),
        ("#hotel#\n1 a\tb\n#hotel#\n", 3, "inside a dialogue"),
        ("#hotel\n1 a\tb\n", 1, "malformed domain line"),
        ("\n#hotel#\n\n", 2, "has no turns"),
    ],
)
def test_malformed_graphdialog_lines(make_paths: MakePaths, text: str, line: int, message: str) -> None:
    paths = make_paths({"train.txt": text})
    with pytest.raises(DataError, match=f"train.txt:{line}: .*{message}"):
        read_graphdialog(paths.data_dir / "train.txt")


def test_unknown_domain_is_an_error_not_dropped(make_paths: MakePaths) -> None:
    paths = make_paths(tiny_files(TRAIN + "#taxi#\n1 a taxi\tbooked\n"))
    with pytest.raises(DataError, match=r"train\.txt:12: unknown domain #taxi#"):
        build_train(paths)


def test_read_graphdialog(make_paths: MakePaths) -> None:
    dialogues = read_graphdialog(make_paths({"t.txt": TRAIN}).data_dir / "t.txt")
    assert [(d.domain, len(d.turns), d.line) for d in dialogues] == [
        ("restaurant", 3, 1),
        ("train", 1, 6),
        ("hotel", 1, 9),
    ]
    assert dialogues[0].turns[0] == (
        "i want italian food in the centre",
        "pizza hut city centre is cheap i m sure you ll like it",
    )


def _dialogues(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.strip("\n").split("\n\n")]


def test_build_drops_train_dialogues_and_renders_dfnet_format(make_paths: MakePaths) -> None:
    build = build_train(make_paths(tiny_files()), seed=0)
    assert build.counts.dialogues == 2
    assert build.counts.turns == 4
    assert build.counts.turns_with_entities == 4
    assert dict(build.counts.dialogues_per_domain) == {"restaurant": 1, "hotel": 1, "attraction": 0}
    assert build.counts.kb_truncated == 0
    restaurant, hotel = _dialogues(build.text)
    assert restaurant[0] == "#restaurant#" and hotel[0] == "#hotel#"
    values_lines = [line for line in restaurant if line.startswith("0 ") and line.split()[-2] == "name"]
    assert len(values_lines) == KB_SIZE
    names = [line.split()[-1] for line in values_lines]
    assert {"pizza_hut_city_centre", "golden_wok"} <= set(names)
    assert len(set(names)) == KB_SIZE
    # Each values line is followed by its triples, in the DB attribute order.
    start = restaurant.index(next(line for line in values_lines if line.endswith("name golden_wok")))
    assert restaurant[start : start + 8] == [
        "0 3_regent_street_city_centre centre italian 01223323733 cb23ab cheap restaurant name golden_wok",
        "0 golden_wok address 3_regent_street_city_centre",
        "0 golden_wok area centre",
        "0 golden_wok food italian",
        "0 golden_wok phone 01223323733",
        "0 golden_wok postcode cb23ab",
        "0 golden_wok pricerange cheap",
        "0 golden_wok type restaurant",
    ]
    turns = [line for line in restaurant if not line.startswith(("0 ", "#"))]
    assert turns == [
        "1 i want italian food in the centre .\tpizza_hut_city_centre is cheap i ' m sure you ' ll like it ."
        "\t['pizza_hut_city_centre', 'cheap']",
        "2 what ' s the postcode ?\tit ' s cb21ab and the phone is 01223323731 do you want golden_wok"
        " instead ?\t['cb21ab', '01223323731', 'golden_wok']",
        "3 book pizza_hut_city_centre please .\tdone your reference number is : ab12cd34 .\t['ab12cd34']",
    ]
    # Only two hotels exist, so the hotel KB holds both; gold lists are Python list literals.
    assert len([line for line in hotel if line.split()[-2:-1] == ["name"]]) == 2
    hotel_turn = hotel[-1].split("\t")
    assert hotel_turn[1] == "rosa_'_s_bed_and_breakfast is at sleeperz_hotel,_station_road ."
    assert ast.literal_eval(hotel_turn[2]) == ["rosa_'_s_bed_and_breakfast"]
    assert hotel_turn[2] == '["rosa_\'_s_bed_and_breakfast"]'


def test_build_is_deterministic_per_seed(make_paths: MakePaths) -> None:
    paths = make_paths(tiny_files())
    assert build_train_text(paths, seed=0) == build_train_text(paths, seed=0)
    assert build_train_text(paths, seed=0) != build_train_text(paths, seed=1)

    def turns(text: str) -> list[str]:
        return [line for line in text.splitlines() if line[:1].isdigit() and not line.startswith("0 ")]

    assert turns(build_train_text(paths, seed=0)) == turns(build_train_text(paths, seed=1))


def test_kb_keeps_the_first_mentioned_rows_when_more_than_fit(make_paths: MakePaths) -> None:
    mentions = " and ".join(RESTAURANT_NAMES)
    build = build_train(make_paths(tiny_files(f"#restaurant#\n1 list them\t{mentions}\n")))
    (restaurant,) = _dialogues(build.text)
    names = {line.split()[-1] for line in restaurant if line.startswith("0 ") and line.split()[-2] == "name"}
    assert names == {n.replace(" ", "_") for n in RESTAURANT_NAMES[:KB_SIZE]}
    assert build.counts.kb_truncated == 1


def test_loader_reads_the_built_file(make_paths: MakePaths) -> None:
    mwoz = pytest.importorskip("mktod.datasets.mwoz")
    paths = make_paths(tiny_files())
    split = mwoz.load_file(ensure_train_file(paths), "train")
    assert [len(d.kb) for d in split.dialogues] == [KB_SIZE, 2]
    record: Record = split.dialogues[1].kb.records[0]
    assert record.fields["name"] in {"rosa_'_s_bed_and_breakfast", "lovell_lodge"}
    assert split.dialogues[0].turns[2].gold_entities == ("ab12cd34",)


def test_cache_is_written_with_a_manifest_and_reused(
    make_paths: MakePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_paths(tiny_files())
    path = ensure_train_file(paths, seed=3)
    assert path == paths.cache_dir / "mwoz" / "train.seed3.txt" == train_file_path(paths, 3)
    assert path.read_text() == build_train_text(paths, seed=3)
    manifest = json.loads(manifest_path(paths, 3).read_text())
    assert manifest["seed"] == 3
    assert manifest["builder_version"] == mwoz_train.BUILDER_VERSION
    assert set(manifest["inputs"]) == set(tiny_files())
    assert all(len(digest) == 64 for digest in manifest["inputs"].values())
    assert manifest["counts"]["dialogues"] == 2
    assert read_counts(paths, 3).turns == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.seed3.manifest.json", "train.seed3.txt"]

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(mwoz_train, "build_train", no_build)
    assert ensure_train_file(paths, seed=3) == path


def _rebuilds(paths: DataPaths, seed: int = 0) -> bool:
    """Whether ensure_train_file runs the build (it is spied on, not replaced)."""
    calls: list[int] = []
    real = mwoz_train.build_train

    def spy(p: DataPaths, s: int = 0) -> mwoz_train.TrainBuild:
        calls.append(s)
        return real(p, s)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mwoz_train, "build_train", spy)
        ensure_train_file(paths, seed)
    return bool(calls)


def test_cache_rebuilt_when_an_input_changes(make_paths: MakePaths) -> None:
    paths = make_paths(tiny_files())
    ensure_train_file(paths)
    assert not _rebuilds(paths)
    train = paths.data_dir / "mwoz" / "graphdialog_nokb_txt" / "train.txt"
    train.write_text(TRAIN + "#attraction#\n1 a museum please\tstation museum is nice\n")
    assert _rebuilds(paths)
    assert read_counts(paths).dialogues == 3
    (paths.data_dir / "mwoz" / "multiwoz_db" / "hotel_db.json").write_text(json.dumps(HOTELS[:1]))
    assert _rebuilds(paths)
    assert not _rebuilds(paths)


def test_cache_rebuilt_when_builder_version_or_output_changes(
    make_paths: MakePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_paths(tiny_files())
    path = ensure_train_file(paths)
    path.write_text("damaged")
    assert _rebuilds(paths)
    assert path.read_text() == build_train_text(paths)
    monkeypatch.setattr(mwoz_train, "BUILDER_VERSION", mwoz_train.BUILDER_VERSION + 1)
    assert _rebuilds(paths)
    manifest_path(paths).write_text("{not json")
    assert _rebuilds(paths)


@pytest.mark.parametrize("missing", sorted(tiny_files()))
def test_missing_input_names_the_file(make_paths: MakePaths, missing: str) -> None:
    files = tiny_files()
    del files[missing]
    with pytest.raises(DataError, match=Path(missing).name):
        ensure_train_file(make_paths(files))


@pytest.fixture(scope="module")
def real_train(data_paths: DataPaths) -> tuple[Path, mwoz_train.TrainCounts]:
    """The real train split, built once for this module (the cache is shared for the session)."""
    return ensure_train_file(data_paths), read_counts(data_paths)


@pytest.mark.data
def test_real_train_counts(real_train: tuple[Path, mwoz_train.TrainCounts]) -> None:
    path, counts = real_train
    assert counts.dialogues == 1839
    assert dict(counts.dialogues_per_domain) == {"restaurant": 1199, "hotel": 513, "attraction": 127}
    assert counts.turns == 8529
    assert 5000 < counts.turns_with_entities < counts.turns
    dialogues = _dialogues(path.read_text())
    assert len(dialogues) == 1839
    for lines in dialogues:
        assert sum(1 for line in lines if line.startswith("0 ") and line.split()[-2] == "name") == KB_SIZE
        for line in lines:
            if line[:1].isdigit() and not line.startswith("0 "):
                _user, response, gold = line.split("\t")
                assert set(ast.literal_eval(gold)) <= set(response.split())


@pytest.mark.data
def test_real_normalisation_agrees_with_dfnet_dev(data_paths: DataPaths) -> None:
    agreement = dev_agreement(data_paths)
    assert (agreement.dialogues, agreement.turns) == (117, 576)
    assert agreement.responses_equal / agreement.turns > 0.97
    assert agreement.users_equal / agreement.turns > 0.98
    assert agreement.gold_f1 > 0.92
