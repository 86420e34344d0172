"""Per-turn entity counts and the paired bootstrap of an Entity F1 difference."""

from __future__ import annotations

import pytest

from mktod.metrics import EntityCounts, EntityVocab, evaluate_responses, score_turns
from mktod.significance import paired_bootstrap_f1

HIT, MISS, WRONG = EntityCounts(1, 0, 0), EntityCounts(0, 0, 1), EntityCounts(0, 1, 1)


def test_turn_counts_add_up_to_the_corpus_scores() -> None:
    vocab = EntityVocab.build("camrest", {"food": ["chinese", "italian"], "name": ["golden_wok"]})
    refs = ["golden_wok serves chinese food", "no italian places", "goodbye"]
    preds = ["golden_wok serves italian food", "there is an italian place", "bye"]
    scored, counts = score_turns("camrest", preds, refs, vocab)
    assert counts == [EntityCounts(1, 1, 1), EntityCounts(1, 0, 0), EntityCounts(0, 0, 0)]
    scores = evaluate_responses("camrest", preds, refs, vocab)
    assert scored == scores
    assert (scores.tp, scores.fp, scores.fn) == tuple(sum(c[i] for c in counts) for i in range(3))


def test_identical_systems_differ_by_exactly_zero() -> None:
    counts = [HIT, MISS, WRONG, HIT]
    result = paired_bootstrap_f1(counts, counts, ["d1", "d1", "d2", "d3"], draws=200)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero and result.groups == 3


def test_a_system_better_in_every_dialogue_is_told_apart() -> None:
    a = [HIT, HIT, HIT]
    b = [MISS, MISS, MISS]
    result = paired_bootstrap_f1(a, b, ["d1", "d2", "d3"], draws=200)
    # Every redraw has F1(A) = 100 and F1(B) = 0.
    assert (result.difference, result.low, result.high) == (100.0, 100.0, 100.0)
    assert result.excludes_zero


def test_mixed_results_give_an_interval_around_the_observed_difference() -> None:
    # d1: A right, B wrong; d2: A wrong, B right; d3: both right. Observed: A 2 TP, 1 FP, 1 FN -> F1
    # 2*2/(4+1+1) = 66.67; B the same -> difference 0, but redraws that favour d1 or d2 swing it.
    a = [HIT, WRONG, HIT]
    b = [WRONG, HIT, HIT]
    groups = ["d1", "d2", "d3"]
    result = paired_bootstrap_f1(a, b, groups, draws=500, seed=1)
    assert result.difference == pytest.approx(0.0)
    assert result.low < 0 < result.high and not result.excludes_zero
    assert paired_bootstrap_f1(a, b, groups, draws=500, seed=1) == result  # deterministic per seed
    # Turns of one dialogue move together: pooling d1 and d2 into one dialogue cancels them out.
    pooled = paired_bootstrap_f1(a, b, ["d1", "d1", "d3"], draws=500, seed=1)
    assert (pooled.low, pooled.high) == (0.0, 0.0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per turn"):
        paired_bootstrap_f1([HIT], [HIT, HIT], ["d1"])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_f1([HIT], [HIT], ["d1"], confidence=1.0)
    with pytest.raises(ValueError, match="draws"):
        paired_bootstrap_f1([HIT], [HIT], ["d1"], draws=0)
    empty = paired_bootstrap_f1([], [], [])
    assert empty.groups == 0 and empty.difference == 0.0
