from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pytest

from mktod.datasets.base import DataPaths
from mktod.datasets.stats import REFERENCES, compute_stats, format_stats_table, stats_to_json
from mktod.errors import DataError

MakePaths = Callable[[Mapping[str, str]], DataPaths]  # the make_paths fixture (tests/datasets/conftest.py)

NAV = "0 2_miles\tno_traffic\tgas_station\t91_el_camino_real\tvalero\n"
CAM = "0 1_main_street\tcentre\tindian\t52.1,0.1\t01223_000000\tc.b_1,_1_a.a\tcheap\tkohinoor\n"
MWOZ_DEV = "#hotel#\n0 north name a_hotel\n0 a_hotel area north\n1 north ?\ta_hotel\t['a_hotel']\n"


def _tree() -> dict[str, str]:
    return {
        "smd/eer_txt/train.txt": (
            f"#navigate#\n{NAV}{NAV}1 a\tb\t['valero']\n2 c\td\t[]\n\n#schedule#\n1 e\tf\t[]\n"
        ),
        "smd/eer_txt/dev.txt": f"#navigate#\n{NAV}1 a\tb\t['valero']\n",
        # smd test is missing: that split reports an error, the others still load.
        "camrest/eer_txt/train.txt": f"{CAM}1 a\tb\t['kohinoor']\n",
        "camrest/eer_txt/dev.txt": f"{CAM}1 a\tb\t[]\n",
        "camrest/eer_txt/test.txt": f"{CAM}1 a\tb\t[]\n",
        # CDNet's KBs add restaurants the dialogues never show (here none: kohinoor again).
        "camrest/cdnet/train.json": json.dumps([{"kb": [{"name": "kohinoor", "postcode": "cb11aa"}]}]),
        "camrest/cdnet/val.json": "[]",
        "camrest/cdnet/test.json": "[]",
        "mwoz/dfnet_txt/dev.txt": MWOZ_DEV,
        "mwoz/dfnet_txt/test.txt": MWOZ_DEV,
    }


def test_counts_and_errors_per_split(make_paths: MakePaths) -> None:
    stats = compute_stats(make_paths(_tree()), ["smd", "camrest"])
    by_key = {(s.dataset, s.split): s for s in stats}
    assert list(by_key) == [(d, s) for d in ("smd", "camrest") for s in ("train", "dev", "test")]
    train = by_key["smd", "train"]
    assert (train.dialogues, train.system_turns, train.turns_with_entities) == (2, 3, 1)
    assert (train.kb_rows_min, train.kb_rows_mean, train.kb_rows_max) == (0, 1.0, 2)
    assert train.global_kb_size is None and train.error is None
    assert train.reference == REFERENCES["smd", "train"]
    missing = by_key["smd", "test"]
    assert (
        missing.dialogues is None and missing.error is not None and "missing SMD test split" in missing.error
    )
    assert {by_key["camrest", s].global_kb_size for s in ("train", "dev", "test")} == {1}
    assert by_key["camrest", "train"].reference.global_kb_size == 112


def test_mwoz_train_or_db_failure_does_not_hide_dev_test(make_paths: MakePaths) -> None:
    # No graphdialog train file and no MultiWOZ databases here: train and the global KB fail, and say so.
    stats = {s.split: s for s in compute_stats(make_paths(_tree()), ["mwoz"])}
    assert stats["train"].error is not None and stats["train"].dialogues is None
    assert stats["dev"].error is None and (stats["dev"].dialogues, stats["dev"].system_turns) == (1, 1)
    assert stats["dev"].global_kb_error is not None and stats["dev"].global_kb_size is None
    table = format_stats_table(tuple(stats.values()))
    assert "mwoz train: not loaded:" in table
    assert "mwoz global KB: not loaded:" in table


def test_table_and_json(make_paths: MakePaths) -> None:
    stats = compute_stats(make_paths(_tree()), ["smd"])
    table = format_stats_table(stats)
    lines = table.splitlines()
    assert "dialogues ours/ref" in lines[0] and "turns ours/ref" in lines[0]
    assert lines[2].split()[:6] == ["smd", "train", "2", "/", "2425", "*"]
    assert "smd test: not loaded: DataError" in table
    # Columns line up: every table row starts its third column at the same offset.
    offset = lines[0].index("dialogues")
    assert all(row[offset - 2 : offset] == "  " and row[offset] != " " for row in lines[2:5])
    rows = stats_to_json(stats)
    assert json.loads(json.dumps(rows)) == rows
    assert rows[0]["reference"] == {
        "dialogues": 2425,
        "system_turns": 6290,
        "global_kb_size": None,
        "approximate": False,
        "source": "EVALUATION.md",
    }


def test_unknown_dataset_is_an_error(make_paths: MakePaths) -> None:
    with pytest.raises(DataError, match="unknown dataset 'kvret'"):
        compute_stats(make_paths({}), ["kvret"])


@pytest.mark.data
def test_real_smd_camrest_mwoz_match_the_reference(data_paths: DataPaths) -> None:
    stats = compute_stats(data_paths, ["smd", "camrest", "mwoz"])
    for s in stats:
        if s.dataset == "mwoz" and s.split == "train":
            continue  # rebuilt; its own test checks it
        assert s.error is None, s.error
        assert (s.dialogues, s.system_turns) == (s.reference.dialogues, s.reference.system_turns)
    camrest = [s for s in stats if s.dataset == "camrest"]
    assert {s.global_kb_size for s in camrest} == {114}
    mwoz_dev = next(s for s in stats if (s.dataset, s.split) == ("mwoz", "dev"))
    if mwoz_dev.global_kb_error is None:
        assert (mwoz_dev.global_kb_size, mwoz_dev.kb_unmapped) == (222, 0)
    assert "ours/ref" in format_stats_table(stats)
