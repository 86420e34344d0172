"""Hand-computed cases for every rule of EVALUATION.md's metrics, plus a self-score check on the real data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mktod.errors import DataError
from mktod.metrics import (
    EntityScores,
    EntityVocab,
    bleu,
    entity_counts,
    entity_f1,
    evaluate_responses,
    extract_entities,
    normalize,
    recall_at_k,
    split_punctuation,
)
from mktod.types import KB, Record

SMD_RAW: dict[str, Any] = {
    "time": ["7pm", "10am"],
    "temperature": ["20f", "30f", "100f"],
    "party": ["HR", "Tom"],
    "room": ["conference room 100"],
    "event": ["conference", "lab appointment"],
    "distance": ["5_miles"],
    "poi": [{"poi": "Chef_Chu_s", "address": "593 Arrowhead Way", "type": "chinese restaurant"}],
}
MWOZ_RAW: dict[str, Any] = {
    "choice": ["many", "all", "to", "3", "three", "three ", "two", "All"],
    "area": ["centre", "north"],
    "pricerange": ["free", "cheap"],
    "name": [
        "The Cambridge Belfry",
        "cambridge belfry",
        "cote",
        "cote brasserie",
        "restaurant two two",
        "mall",
    ],
}


def smd() -> EntityVocab:
    return EntityVocab.build("smd", SMD_RAW)


def mwoz() -> EntityVocab:
    return EntityVocab.build("mwoz", MWOZ_RAW)


def camrest() -> EntityVocab:
    return EntityVocab.build("camrest", {"food": ["chinese"], "name": ["golden_wok"], "time": ["7pm"]})


# ---------------------------------------------------------------------------------------------- text


def test_normalize_lowercases_and_unjoins() -> None:
    assert normalize("The_Golden_Wok is CHEAP") == "the golden wok is cheap"


def test_split_punctuation_spaces_every_mark_and_collapses_whitespace() -> None:
    assert split_punctuation("it's 13:00,  ok?") == "it ' s 13 : 00 , ok ?"
    assert split_punctuation("it ' s 13 : 00 , ok ?") == "it ' s 13 : 00 , ok ?"


# ------------------------------------------------------------------------------------------ vocabulary


def test_smd_vocab_poi_extras_and_hr() -> None:
    values = set(smd().values)
    assert {"chef chu s", "593 arrowhead way", "chinese restaurant"} <= values
    assert {"yoga", " lab ", "dentist", "1st", "2nd", "3rd", "11th", "20th", "jill", "jack", " hr "} <= values
    assert "21st" not in values
    assert "hr" not in values  # "HR" normalised to "hr", then replaced by " hr "
    assert "5 miles" in values and "20f" in values  # units already in the list, not added again


def test_vocab_is_longest_first_with_alphabetical_ties() -> None:
    values = smd().values
    assert [len(v) for v in values] == sorted((len(v) for v in values), reverse=True)
    assert values.index("100f") < values.index("10am")  # same length: alphabetical
    assert values[0] == "conference room 100"


def test_mwoz_choice_is_prefixed_and_sorted_by_prefixed_length() -> None:
    values = mwoz().values
    assert "choice-all" in values and "all" not in values
    assert values.count("choice-all") == 1  # "All" and "all" are one value
    assert "choice-three " in values  # the trailing space is part of the value, as in the list
    # choice-all (10 characters) comes before cote (4) and mall (4); unprefixed it would come after them
    assert values.index("choice-all") < values.index("mall")


def test_camrest_uses_every_slot_without_extras() -> None:
    assert set(camrest().values) == {"chinese", "golden wok", "7pm"}


def test_unknown_dataset_rejected() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'kvret'"):
        EntityVocab.build("kvret", {})


def test_from_file_reads_and_reports_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "entities.json"
    good.write_text(json.dumps(SMD_RAW), encoding="utf-8")
    assert EntityVocab.from_file("smd", good) == smd()

    with pytest.raises(DataError, match=r"missing\.json.*not found"):
        EntityVocab.from_file("smd", tmp_path / "missing.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{oops", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json.*not valid JSON"):
        EntityVocab.from_file("smd", bad_json)
    not_dict = tmp_path / "list.json"
    not_dict.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"list\.json.*JSON object"):
        EntityVocab.from_file("camrest", not_dict)
    bad_poi = tmp_path / "poi.json"
    bad_poi.write_text(json.dumps({"poi": [{"poi": "x"}]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"poi\.json.*poi entry 0"):
        EntityVocab.from_file("smd", bad_poi)
    bad_value = tmp_path / "value.json"
    bad_value.write_text(json.dumps({"area": ["north", 3]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"value\.json.*'area' value 1"):
        EntityVocab.from_file("mwoz", bad_value)


# ------------------------------------------------------------------------------------ SMD / CamRest


def test_smd_rewrites_am_pm() -> None:
    assert extract_entities("the meeting is at 7 pm", smd()) == ["7pm"]
    assert extract_entities("the meeting is at 10 am", smd()) == ["10am"]
    assert extract_entities("at 7 pm", camrest()) == []  # the rewriting is SMD only


def test_smd_rewrites_temperature_ranges() -> None:
    assert extract_entities("it will be 20-30f", smd()) == ["20f", "30f"]
    assert extract_entities("it will be 20-100f", smd()) == ["100f", "20f"]


def test_substring_of_a_taken_value_is_not_counted() -> None:
    # "conference" is inside the taken "conference room 100", wherever else it occurs in the text.
    assert extract_entities("conference room 100 for the conference", smd()) == ["conference room 100"]
    assert extract_entities("the conference", smd()) == ["conference"]


def test_smd_spaced_extras_match_whole_words_only() -> None:
    assert extract_entities("HR meeting", smd()) == [" hr "]
    assert extract_entities("three hours", smd()) == []
    # " lab " (with its spaces) is not a substring of the taken "lab appointment", so both count (as Q-TOD)
    assert extract_entities("your lab appointment", smd()) == ["lab appointment", " lab "]
    assert extract_entities("the lab is open", smd()) == [" lab "]


def test_smd_underscored_values_match() -> None:
    assert extract_entities("chef_chu_s is 5_miles away", smd()) == ["chef chu s", "5 miles"]


def test_camrest_substring_rule() -> None:
    assert extract_entities("Golden_Wok serves chinese food", camrest()) == ["golden wok", "chinese"]


# ------------------------------------------------------------------------------------------------ MWOZ


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("there are many options", ["many"]),
        ("how many people ?", []),
        ("we have many other types", []),
        ("there are many food types", []),
        ("we have many cuisines", []),
    ],
)
def test_mwoz_choice_many(text: str, expected: list[str]) -> None:
    assert extract_entities(text, mwoz()) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all of the hotels", ["all"]),
        ("they are all expensive", ["all"]),
        ("all moderate", ["all"]),
        ("all cheap ones", ["all", "cheap"]),
        ("all the hotels", []),
        ("that is all", []),
    ],
)
def test_mwoz_choice_all(text: str, expected: list[str]) -> None:
    assert extract_entities(text, mwoz()) == expected


def test_mwoz_choice_to_never_counts() -> None:
    assert extract_entities("there are to", mwoz()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("there are 3 hotels", ["3"]),
        ("there is 3", ["3"]),
        ("i found 3", ["3"]),
        ("we have about 3", ["3"]),
        ("we have 3", ["3"]),
        ("there are only 3", ["3"]),
        ("we have only 3", ["3"]),
        ("3 hotels are there", []),
        ("there are some 3", []),
        ("we have three: a , b and c", ["three"]),
        ("i have three hotels", ["three "]),  # the longer "three " (trailing space) is tried first
    ],
)
def test_mwoz_choice_needs_a_lead_in(text: str, expected: list[str]) -> None:
    assert extract_entities(text, mwoz()) == expected


def test_mwoz_centre_not_inside_towninfo_centre() -> None:
    assert extract_entities("thank you for contacting cambridge towninfo centre", mwoz()) == []
    assert extract_entities("it is in the centre", mwoz()) == ["centre"]
    assert extract_entities("cambridge towninfo centre : in the centre", mwoz()) == ["centre"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("they offer free parking", ["free"]),
        ("free internet", ["free"]),
        ("free wifi", ["free"]),
        ("entrance is free", []),
    ],
)
def test_mwoz_free_only_with_parking_internet_wifi(text: str, expected: list[str]) -> None:
    assert extract_entities(text, mwoz()) == expected


def test_mwoz_blanking() -> None:
    # The taken value is blanked, so the shorter name inside it does not match again ...
    assert extract_entities("the cambridge belfry", mwoz()) == ["the cambridge belfry"]
    # ... nor a second mention of the same value ...
    assert extract_entities("north , north", mwoz()) == ["north"]
    # ... but unlike SMD a shorter value elsewhere in the text still counts.
    assert extract_entities("cote brasserie , not cote", mwoz()) == ["cote brasserie", "cote"]
    assert extract_entities("there are two : restaurant two two", mwoz()) == ["restaurant two two", "two"]


def test_mwoz_choice_blanking_uses_prefixed_order() -> None:
    # choice-all (10) runs before mall (4) and blanks every "all", the one in "mall" included.
    assert extract_entities("all of the shops in the mall", mwoz()) == ["all"]


# --------------------------------------------------------------------------------------------- scoring


def test_entity_counts_per_turn() -> None:
    assert entity_counts(["a", "b"], []) == (0, 0, 0)  # no reference entity: not scored
    assert entity_counts(["a", "b", "b", "x"], ["a", "c"]) == (1, 2, 1)  # FP over distinct {b, x}
    assert entity_counts(["a"], ["a", "a"]) == (2, 0, 0)  # each reference element counts (as Q-TOD)


def test_entity_f1_micro_over_turns_with_reference_entities() -> None:
    scores = entity_f1([["a", "b"], ["x"], []], [["a", "c"], [], ["d"]])
    # tp 1, fp 1 (b), fn 2 (c, d); the middle turn's FP x is not counted
    assert (scores.tp, scores.fp, scores.fn, scores.turns_scored) == (1, 1, 2, 2)
    assert scores.precision == pytest.approx(50.0)
    assert scores.recall == pytest.approx(100 / 3)
    assert scores.f1 == pytest.approx(40.0)


def test_entity_f1_without_scored_turns_is_zero() -> None:
    assert entity_f1([["a"]], [[]]) == EntityScores(0.0, 0.0, 0.0, 0, 0, 0, 0)


def test_bleu_of_references_against_themselves_is_100() -> None:
    refs = ["the golden_wok is in the north .", "would you like the address ?", "ok"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(["The Golden Wok is in the North ."], ["the golden_wok is in the north ."]) == pytest.approx(
        100
    )
    assert bleu(["a b c d"], ["e f g h"]) == pytest.approx(0.0)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        evaluate_responses("smd", ["a", "b"], ["a", "b", "c"], smd())
    with pytest.raises(ValueError, match="3 predictions but 1 references"):
        bleu(["a", "b", "c"], ["a"])
    with pytest.raises(ValueError, match="nothing to score"):
        bleu([], [])


def test_evaluate_responses_rejects_a_foreign_vocabulary() -> None:
    with pytest.raises(ValueError, match="vocabulary is for smd, not mwoz"):
        evaluate_responses("mwoz", ["a"], ["a"], smd())


def test_evaluate_responses_smd() -> None:
    preds = ["the meeting is at 7 pm with tom", "ok", "chef chu s is 5 miles away"]
    refs = ["the meeting is at 7pm with hr", "ok", "chef_chu_s is 5_miles away"]
    scores = evaluate_responses("smd", preds, refs, smd())
    # turn 1: ref {7pm, hr}, pred {7pm, tom}: tp 1, fp 1, fn 1; turn 3: tp 2; turn 2 not scored
    assert (scores.tp, scores.fp, scores.fn, scores.turns, scores.turns_scored) == (3, 1, 1, 3, 2)
    assert scores.entity_f1 == pytest.approx(75.0)
    assert scores.as_dict()["entity_f1"] == scores.entity_f1


def test_evaluate_responses_mwoz_splits_predictions() -> None:
    # Unsplit, "there are 3." would not score BLEU 100 against the split reference.
    scores = evaluate_responses("mwoz", ["There are 3.  Cote?"], ["there are 3 . cote ?"], mwoz())
    assert scores.bleu == pytest.approx(100.0)
    assert scores.entity_f1 == pytest.approx(100.0)
    assert scores.tp == 2


# ------------------------------------------------------------------------------------------- Recall@K

R1 = Record("r1", {"name": "golden_wok", "area": "north"})
R2 = Record("r2", {"name": "tandoori_palace", "area": "west"})
R3 = Record("r3", {"name": "curry_king", "area": "centre"})
CONDENSED = KB((R1, R2, R3))


def test_recall_at_k_hand_example() -> None:
    scores = recall_at_k(
        retrieved=[[R1, R2, R3], [R3, R1], [R1], [R2]],
        gold=[["tandoori_palace", "west"], ["curry king", "centre", "ABC123"], ["xyz"], []],
        kbs=[CONDENSED] * 4,
        ks=(1, 2, 3),
    )
    # turn 1: both at rank 2; turn 2: both at rank 1, ABC123 is not a KB value; turns 3 and 4 have no pair
    assert (scores.pairs, scores.turns) == (4, 2)
    assert scores.recall == {1: pytest.approx(50.0), 2: pytest.approx(100.0), 3: pytest.approx(100.0)}
    assert scores.all_covered == {1: pytest.approx(50.0), 2: pytest.approx(100.0), 3: pytest.approx(100.0)}


def test_recall_at_k_partial_coverage_and_value_sets() -> None:
    values = {"golden_wok", "north", "tandoori_palace", "west"}
    scores = recall_at_k([[R1]], [["golden_wok", "west", "golden_wok"]], [values], ks=(1,))
    assert scores.pairs == 2  # the repeated gold entity counts once
    assert scores.recall[1] == pytest.approx(50.0)
    assert scores.all_covered[1] == pytest.approx(0.0)


def test_recall_at_k_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="1 retrieved, 2 gold, 1 KBs"):
        recall_at_k([[R1]], [[], []], [CONDENSED])
    with pytest.raises(ValueError, match="positive"):
        recall_at_k([[R1]], [[]], [CONDENSED], ks=(0,))


# ------------------------------------------------------------------------------------------- real data

DATA_DIR = Path(
    os.environ.get("MKTOD_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
)
SPLITS = {
    "smd": ("smd/eer_txt/test.txt", "smd/eer_txt/kvret_entities.json"),
    "camrest": ("camrest/eer_txt/test.txt", "camrest/eer_txt/camrest_entities.json"),
    "mwoz": ("mwoz/dfnet_txt/test.txt", "mwoz/dfnet_txt/global_entities.json"),
}


def read_responses(path: Path) -> list[str]:
    """System responses of a ``*.txt`` split: the second tab field of each turn line."""
    responses = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "0 ")):
            responses.append(line.split("\t")[1])
    return responses


@pytest.mark.data
@pytest.mark.parametrize("dataset", sorted(SPLITS))
def test_references_score_100_against_themselves(dataset: str) -> None:
    text_file, entity_file = SPLITS[dataset]
    if not (DATA_DIR / text_file).exists():
        pytest.skip(f"data not found under {DATA_DIR} (set MKTOD_DATA_DIR)")
    vocab = EntityVocab.from_file(dataset, DATA_DIR / entity_file)
    refs = read_responses(DATA_DIR / text_file)
    if dataset == "mwoz":
        # 37 of 711 MWOZ test references are not in split form ("53-57_lensfield_road", "13:00"); both
        # sides are split, so they too score 100 against themselves.
        assert sum(split_punctuation(normalize(r)) != normalize(r) for r in refs) == 37
    scores = evaluate_responses(dataset, refs, refs, vocab)
    assert scores.entity_f1 == pytest.approx(100.0)
    assert scores.bleu == pytest.approx(100.0)
    assert scores.turns_scored > 0.4 * scores.turns
