from __future__ import annotations

from pathlib import Path

import pytest

from mktod.baseline import baseline_predictions, fill_response, rank_records
from mktod.datasets import DataPaths
from mktod.evaluate import read_predictions
from mktod.types import KB, Dialogue, Record, Turn


def rec(rid: str, name: str, area: str, phone: str) -> Record:
    return Record(rid, {"name": name, "area": area, "phone": phone})


SOURCE = (rec("s1", "golden_wok", "north", "01223_1"), rec("s2", "ask", "centre", "01223_2"))


def test_rank_records_by_values_in_context() -> None:
    target = (rec("t1", "zizzi", "west", "9"), rec("t2", "kohinoor", "east", "8"))
    ranked = rank_records(target, "i want something in the east , like kohinoor")
    assert [r.id for r in ranked] == ["t2", "t1"]
    # Ties keep KB order.
    assert [r.id for r in rank_records(target, "hello")] == ["t1", "t2"]


def test_fill_maps_records_in_order_of_mention() -> None:
    target = (rec("t1", "zizzi", "west", "9"), rec("t2", "kohinoor", "east", "8"))
    response = "ask is in the centre , golden_wok is in the north , call golden_wok on 01223_1"
    filled = fill_response(response, SOURCE, target)
    # ask is mentioned first -> best target record (t1); golden_wok -> second (t2).
    assert filled == "zizzi is in the west , kohinoor is in the east , call kohinoor on 8"


def test_fill_keeps_non_kb_words_and_missing_attributes() -> None:
    target = (Record("t1", {"name": "zizzi"}),)
    assert (
        fill_response("ask is in the centre on monday", SOURCE, target) == "zizzi is in the centre on monday"
    )
    assert fill_response("ask is nice", SOURCE, ()) == "ask is nice"


def test_predictions_copy_the_closest_training_turn() -> None:
    train = (
        Dialogue("a", "r", (Turn("any cheap food ?", "ask is cheap", ("ask",)),), KB(SOURCE)),
        Dialogue("b", "r", (Turn("phone number please", "call 01223_1", ("01223_1",)),), KB(SOURCE)),
        # Fillers: BM25's idf is zero for a term in half of a two-document corpus.
        *(Dialogue(f"f{i}", "r", (Turn(f"filler {i}", "ok"),), KB(())) for i in range(3)),
    )
    target = KB((rec("t1", "zizzi", "west", "9"),))
    evaluated = (Dialogue("c", "r", (Turn("what is the phone number ?", "x"),), target),)
    assert baseline_predictions(train, evaluated) == ["call 9"]


@pytest.mark.data
def test_cli_baseline_on_camrest_dev(data_dir: Path, tmp_path: Path) -> None:
    from mktod.baseline import run_baseline

    out = tmp_path / "pred.txt"
    scores = run_baseline("camrest", "dev", out, DataPaths(data_dir, tmp_path / "cache"))
    assert len(read_predictions(out)) == 539 == scores.turns
    # A floor, but a real one: well above zero, well below a trained model.
    assert 25.0 < scores.entity_f1 < 60.0
    assert 5.0 < scores.bleu < 30.0
