"""Meta-knowledge tags and renderings on a hand-made three-restaurant example (METHOD.md §4)."""

from __future__ import annotations

import math

import pytest

from mktod.meta import (
    SPECIAL_TOKENS,
    MetaConfig,
    MetaTags,
    appeared_in,
    confidence_tag,
    distinctive_values,
    identifying_fields,
    negative_record,
    normalise_scores,
    order_tag,
    render,
    render_llm_sentences,
    render_none,
    render_prefix,
    render_prompt,
    tag_hits,
)
from mktod.types import Hit, Record, Utterance

JINLING = Record(
    "r1",
    {
        "name": "jinling_noodle_bar",
        "area": "centre",
        "food": "chinese",
        "pricerange": "moderate",
        "phone": "01223566188",
    },
)
WOK = Record(
    "r2",
    {
        "name": "golden_wok",
        "area": "north",
        "food": "chinese",
        "pricerange": "moderate",
        "phone": "01223350688",
    },
)
PIZZA = Record(
    "r3",
    {
        "name": "pizza_hut_city_centre",
        "area": "centre",
        "food": "italian",
        "pricerange": "cheap",
        "phone": "01223323737",
    },
)
RECORDS = (JINLING, WOK, PIZZA)
CONTEXT = (
    Utterance("user", "I want Chinese food in the centre."),
    Utterance("system", "Jinling Noodle Bar is a nice place."),
    Utterance("user", "Anything else?"),
)


def hits(scores: tuple[float, ...] = (3.0, 1.0, 0.0)) -> tuple[Hit, ...]:
    return tuple(Hit(r, s, i + 1) for i, (r, s) in enumerate(zip(RECORDS, scores, strict=True)))


def test_order_tags_per_rank() -> None:
    assert [order_tag(r) for r in range(1, 8)] == [
        "<1th-entity>",
        "<2th-entity>",
        "<3th-entity>",
        "<4th-entity>",
        "<5th-entity>",
        "<other-entity>",
        "<other-entity>",
    ]
    with pytest.raises(ValueError, match="1-based"):
        order_tag(0)


def test_confidence_thresholds_are_inclusive_below() -> None:
    assert confidence_tag(0.75) == "<high-confidence>"
    assert confidence_tag(0.7499) == "<mid-confidence>"
    assert confidence_tag(0.25) == "<mid-confidence>"
    assert confidence_tag(0.2499) == "<low-confidence>"
    assert confidence_tag(0.5, (0.4, 0.75)) == "<mid-confidence>"
    assert confidence_tag(0.3, (0.4, 0.75)) == "<low-confidence>"


def test_softmax_confidence_matches_hand_computation() -> None:
    z = math.exp(3) + math.exp(1) + 1
    q = normalise_scores([3.0, 1.0, 0.0])
    assert q == pytest.approx((math.exp(3) / z, math.exp(1) / z, 1 / z))  # 0.844, 0.114, 0.042
    tagged = tag_hits(hits(), CONTEXT)
    assert [t.tags.confidence for t in tagged] == [
        "<high-confidence>",
        "<low-confidence>",
        "<low-confidence>",
    ]
    # A temperature of 10 flattens q to (0.391, 0.320, 0.289): all mid.
    flat = tag_hits(hits(), CONTEXT, temperature=10.0)
    assert [t.tags.confidence for t in flat] == ["<mid-confidence>"] * 3
    # Huge dot products must not overflow.
    assert normalise_scores([1000.0, 0.0]) == pytest.approx((1.0, 0.0))


def test_raw_and_sigmoid_score_types() -> None:
    tagged = tag_hits(hits((0.9, 0.5, 0.1)), CONTEXT, score_type="raw", thresholds=(0.4, 0.75))
    assert [t.tags.confidence for t in tagged] == [
        "<high-confidence>",
        "<mid-confidence>",
        "<low-confidence>",
    ]
    assert [t.confidence for t in tagged] == [0.9, 0.5, 0.1]
    assert normalise_scores([0.0], "sigmoid") == (0.5,)


def test_cooccurrence_name_and_distinctive_values() -> None:
    # phone and name are identifying (all distinct); food (2 of 3 distinct) and area are not.
    assert identifying_fields(RECORDS) == {"name", "phone"}
    assert distinctive_values(WOK, RECORDS) == ("golden_wok", "01223350688")
    tagged = tag_hits(hits(), CONTEXT)
    # JINLING by name (case, "_" and punctuation ignored); "chinese" / "centre" name no one entity.
    assert [t.tags.cooccurrence for t in tagged] == ["<old-entity>", "<new-entity>", "<new-entity>"]
    assert appeared_in(WOK, "you can call them on 01223350688 .", RECORDS)
    assert not appeared_in(WOK, "you can call them on 01223350688 .", RECORDS, cooccurrence="name")
    # Whole-word phrases only: "golden woks" is not "golden wok".
    assert not appeared_in(WOK, "golden woks", RECORDS)
    # The name always counts, even with nothing to compare against.
    assert appeared_in(PIZZA, "pizza hut city centre it is", ())


def test_distinctive_values_skip_short_and_generic_values() -> None:
    a = Record("a", {"name": "x1", "stars": "4", "parking": "yes", "ref": "abcd"})
    b = Record("b", {"name": "x2", "stars": "3", "parking": "no", "ref": "efgh"})
    assert distinctive_values(a, (a, b)) == ("abcd",)
    assert not appeared_in(a, "a table for 4 people, yes", (a, b))


def test_reference_set_changes_what_is_distinctive() -> None:
    north = Record("n", {"name": "b", "area": "north"})
    south = Record("s", {"name": "c", "area": "south"})
    # Among these two, area is identifying; within a KB where areas repeat, it is not.
    assert appeared_in(north, "somewhere north", (north, south))
    kb = (
        north,
        south,
        Record("m", {"name": "d", "area": "north"}),
        Record("o", {"name": "e", "area": "south"}),
    )
    assert not appeared_in(north, "somewhere north", kb)
    tagged = tag_hits((Hit(north, 1.0, 1), Hit(south, 0.0, 2)), "somewhere north", reference=kb)
    assert tagged[0].tags.cooccurrence == "<new-entity>"


def test_rank_beyond_five_is_other_entity() -> None:
    tagged = tag_hits((Hit(JINLING, 1.0, 6), Hit(WOK, 1.0, 9)), "")
    assert [t.tags.order for t in tagged] == ["<other-entity>", "<other-entity>"]
    assert [t.confidence for t in tagged] == [0.5, 0.5]


def test_negative_is_lowest_scored_record() -> None:
    neg = negative_record(RECORDS, [3.0, 1.0, 0.0])
    assert neg.record == PIZZA and neg.negative and neg.rank == 3
    assert neg.tags == MetaTags("<other-entity>", "<low-confidence>", "<new-entity>")
    assert negative_record(RECORDS, [3.0, 1.0, 0.0], exclude=(PIZZA,)).record == WOK
    with pytest.raises(ValueError, match="excluded"):
        negative_record(RECORDS, [3.0, 1.0, 0.0], exclude=RECORDS)
    with pytest.raises(ValueError, match="3 records but 2 scores"):
        negative_record(RECORDS, [1.0, 2.0])


JINLING_TEXT = (
    "name jinling noodle bar ; area centre ; food chinese ; pricerange moderate ; phone 01223566188"
)
WOK_TEXT = "name golden wok ; area north ; food chinese ; pricerange moderate ; phone 01223350688"


def test_renderings_exact_strings() -> None:
    first, second, _ = tag_hits(hits((3.0, 2.5, -5.0)), CONTEXT)  # q = 0.62, 0.38, 0.0
    assert render_none(first) == JINLING_TEXT
    assert render_prefix(first) == f"<old-entity> <mid-confidence> <1th-entity> {JINLING_TEXT}"
    assert render_prompt(second) == f"The top-2 recalled: with middle confidence: newly recalled: {WOK_TEXT}"
    assert render_prompt(first) == (
        f"The top-1 recalled: with middle confidence: existed in history: {JINLING_TEXT}"
    )
    assert render_llm_sentences(second) == (
        f"{WOK_TEXT}. It has medium possibility that this entity is top-2 important. This is a new entity."
    )
    assert render_llm_sentences(first).endswith("top-1 important. This entity has appeared before.")


def test_renderings_of_negative_and_low_ranks() -> None:
    neg = negative_record(RECORDS, [3.0, 1.0, 0.0], exclude=(PIZZA,))
    assert render_prefix(neg) == f"<new-entity> <low-confidence> <other-entity> {WOK_TEXT}"
    assert (
        render_prompt(neg) == f"The negative entity recalled: with low confidence: newly recalled: {WOK_TEXT}"
    )
    assert render_llm_sentences(neg) == (
        f"{WOK_TEXT}. It has low possibility that this entity is not important. This is a new entity."
    )
    (sixth,) = tag_hits((Hit(WOK, 0.0, 6),), "", score_type="raw")
    assert render_prompt(sixth).startswith("The negative entity recalled: with low confidence:")


def test_config_drives_tagging_and_rendering() -> None:
    cfg = MetaConfig(mode="prompt", temperature=10.0)
    tagged = cfg.tag(hits(), CONTEXT)
    assert cfg.render(tagged[1]).startswith("The top-2 recalled: with middle confidence: newly recalled:")
    assert render(tagged[1], "none") == WOK_TEXT
    with pytest.raises(ValueError, match="unknown meta mode"):
        render(tagged[1], "tags")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low <= high"):
        MetaConfig(thresholds=(0.8, 0.2))


def test_special_tokens_cover_every_tag() -> None:
    assert len(SPECIAL_TOKENS) == len(set(SPECIAL_TOKENS)) == 11
    tagged = (*tag_hits(hits(), CONTEXT), negative_record(RECORDS, [3.0, 1.0, 0.0]))
    for t in tagged:
        assert {t.tags.order, t.tags.confidence, t.tags.cooccurrence} <= set(SPECIAL_TOKENS)
