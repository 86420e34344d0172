"""mktod.mml_diag: q, the generator's posterior and their gold mass, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mktod.meta import NEGATIVE_TAGS, TaggedRecord
from mktod.mml_diag import MmlMeter, gold_mask, posterior_stats
from mktod.types import Record


def test_posterior_stats_by_hand() -> None:
    # One turn, three records, τ = 1. Scores log(2), 0, pad: q = (2/3, 1/3). The generator finds the
    # response 4x likelier under record 2: posterior ∝ (2/3 · 1, 1/3 · 4) = (1/3, 2/3).
    scores = torch.tensor([[math.log(2.0), 0.0, 5.0]])
    single = torch.tensor([[0.0, math.log(4.0), -50.0]])
    mask = torch.tensor([[True, True, False]])
    gold = torch.tensor([[False, True, True]])  # the padding slot's "gold" must not count
    stats = posterior_stats(scores, single, mask, gold, temperature=1.0)
    assert stats["q_gold_mass"] == pytest.approx([1 / 3])
    assert stats["posterior_gold_mass"] == pytest.approx([2 / 3])
    assert stats["q_top_is_gold"] == [0.0] and stats["posterior_top_is_gold"] == [1.0]
    assert stats["gold_share"] == pytest.approx([0.5])
    assert stats["total_variation"] == pytest.approx([1 / 3])  # ½(|2/3 − 1/3| + |1/3 − 2/3|)
    assert stats["likelihood_spread"] == pytest.approx([math.log(4.0)])  # the padding's −50 ignored


def test_temperature_sharpens_q() -> None:
    scores = torch.tensor([[0.6, 0.5]])
    single = torch.zeros(1, 2)
    mask, gold = torch.ones(1, 2, dtype=torch.bool), torch.tensor([[True, False]])
    warm = posterior_stats(scores, single, mask, gold, temperature=1.0)["q_gold_mass"][0]
    cold = posterior_stats(scores, single, mask, gold, temperature=0.05)["q_gold_mass"][0]
    assert warm == pytest.approx(1 / (1 + math.exp(-0.1)))
    assert cold == pytest.approx(1 / (1 + math.exp(-2.0)))
    # A blind generator (the same likelihood everywhere): the posterior is q, MML asks nothing.
    stats = posterior_stats(scores, single, mask, gold, temperature=0.05)
    assert stats["total_variation"] == pytest.approx([0.0], abs=1e-7)


def test_gold_mask_compares_normalised_values() -> None:
    a = TaggedRecord(Record("a", {"name": "pizza_hut", "area": "centre"}), NEGATIVE_TAGS, 1, 1.0, 1.0)
    b = TaggedRecord(Record("b", {"name": "golden_wok", "area": "north"}), NEGATIVE_TAGS, 2, 0.5, 0.5)
    mask = gold_mask([(a, b), (b,)], [{"pizza hut"}, frozenset({"nowhere"})])
    assert mask.tolist() == [[True, False], [False, False]]


def test_meter_averages_gold_masses_over_turns_with_gold_only() -> None:
    meter = MmlMeter()
    assert meter.flush() == {}
    # Turn 1: q = (2/3, 1/3), gold on record 2. Turn 2: no gold record. Turn 3: no records at all.
    scores = torch.tensor([[math.log(2.0), 0.0], [0.0, 0.0], [0.0, 0.0]])
    single = torch.tensor([[0.0, math.log(4.0)], [0.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [False, False]])
    gold = torch.tensor([[False, True], [False, False], [True, True]])
    meter.add(scores, single, mask, gold, temperature=1.0)
    out = meter.flush()
    assert out["turns"] == 2 and out["gold_turns"] == 1
    assert out["q_gold_mass"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["posterior_gold_mass"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["likelihood_spread"] == pytest.approx((math.log(4.0) + 1.0) / 2, abs=1e-4)
    assert meter.flush() == {}  # flushed: the next entry starts again
    # A gold mask narrower than the likelihoods' K (no negative slot there) is read as not gold.
    meter.add(scores[:1], single[:1], mask[:1], gold[:1, :1], temperature=1.0)
    assert "gold_turns" not in meter.flush()
