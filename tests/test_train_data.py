"""One joint-training step's pieces: examples, retrieval with the easy negative, differentiable scores."""

from __future__ import annotations

import pytest
import torch
from retriever_helpers import tiny_encoder

from mktod.generators.base import Likelihoods
from mktod.losses import mml_loss, nll_loss
from mktod.meta import NEGATIVE_TAGS, MetaConfig
from mktod.retriever import Retriever
from mktod.train_config import LossConfig
from mktod.train_data import (
    build_examples,
    data_fingerprint,
    donor_kbs,
    record_scores,
    retrieve_records,
    retrieved_mask,
)
from mktod.train_loss import joint_loss
from mktod.types import KB, Dialogue, Record, Split, TaggedRecord, Turn

torch.set_num_threads(1)

ROWS = (
    Record("r0", {"name": "golden_wok", "area": "north", "food": "chinese"}, "restaurant"),
    Record("r1", {"name": "the_missing_sock", "area": "east", "food": "international"}, "restaurant"),
    Record("r2", {"name": "pizza_hut_city_centre", "area": "centre", "food": "italian"}, "restaurant"),
)
OTHER = (Record("x0", {"name": "jinling_noodle_bar", "area": "centre", "food": "chinese"}, "restaurant"),)


def _split() -> Split:
    first = (Turn("i need chinese food in the north", "golden_wok is in the north"), Turn("thanks", "bye"))
    second = (Turn("anything in the centre ?", "jinling_noodle_bar is in the centre"),)
    dialogues = (
        Dialogue("d0", "restaurant", first, KB(ROWS)),
        Dialogue("d1", "restaurant", second, KB(OTHER)),
    )
    return Split("camrest", "train", dialogues)


def test_examples_have_spoken_targets_and_the_setting_kb() -> None:
    examples = build_examples(_split(), None)
    assert examples[0].response == "golden wok is in the north"
    assert (
        examples[1].query
        == "user: i need chinese food in the north system: golden wok is in the north user: thanks"
    )
    assert examples[0].kb.records == ROWS and examples[2].kb.records == OTHER
    big = KB(ROWS + OTHER, name="all")
    assert all(ex.kb is big for ex in build_examples(_split(), big))
    assert data_fingerprint(examples) != data_fingerprint(build_examples(_split(), big))
    assert [d for d, _ in donor_kbs(examples)] == [0, 1]


def test_top_k_are_tagged_and_the_negative_is_the_lowest_scored_rest() -> None:
    retriever = Retriever(tiny_encoder())
    examples = build_examples(_split(), None)[:1]
    records = retrieve_records(retriever, examples, k=2, meta=MetaConfig())
    ranked = retriever.retrieve(examples[0].query, examples[0].kb, k=3)
    (turn,) = records
    assert [r.record for r in turn] == [h.record for h in ranked]  # top-2, then the 3rd as negative
    assert [r.negative for r in turn] == [False, False, True] and turn[2].tags == NEGATIVE_TAGS
    assert [r.rank for r in turn[:2]] == [1, 2]
    no_negative = retrieve_records(retriever, examples, k=2, meta=MetaConfig(use_negative=False))
    assert len(no_negative[0]) == 2


def test_a_kb_smaller_than_k_takes_its_negative_from_another_dialogue() -> None:
    retriever = Retriever(tiny_encoder())
    examples = build_examples(_split(), None)
    donors = donor_kbs(examples)
    first = retrieve_records(retriever, examples[:1], k=3, meta=MetaConfig(), donors=donors, seed="1:0")
    assert first[0][-1].negative and first[0][-1].record == OTHER[0]
    again = retrieve_records(retriever, examples[:1], k=3, meta=MetaConfig(), donors=donors, seed="1:0")
    assert again == first  # seeded: a resumed run draws the same donors
    # Without donors (or none with a record of their own) the turn simply has no negative.
    assert len(retrieve_records(retriever, examples[:1], k=3, meta=MetaConfig())[0]) == 3
    only_self = donor_kbs(examples[:2])
    assert len(retrieve_records(retriever, examples[:1], k=3, meta=MetaConfig(), donors=only_self)[0]) == 3


def test_record_scores_are_the_retriever_scores_with_gradient_and_a_mask() -> None:
    retriever = Retriever(tiny_encoder())
    retriever.encoder.eval()  # no dropout, so the two computations agree
    examples = build_examples(_split(), None)
    batch = [examples[0], examples[2]]
    records = retrieve_records(retriever, batch, k=2, meta=MetaConfig(use_negative=False))
    scores, mask = record_scores(retriever, [ex.query for ex in batch], records)
    assert scores.shape == mask.shape == (2, 2)
    assert mask.tolist() == [[True, True], [True, False]]
    expected = retriever.scores([batch[0].query], [r.record for r in records[0]])[0]
    torch.testing.assert_close(scores[0], expected)
    assert scores[1, 1] == 0
    # MML's gradient reaches the retriever through these scores.
    gen = torch.tensor([[-5.0, -1.0], [-2.0, 0.0]])
    mml_loss(scores, gen, temperature=0.1, mask=mask).backward()
    grads = [p.grad for p in retriever.encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def _likelihoods(no_entity: bool) -> Likelihoods:
    single = torch.tensor([[-4.0, -6.0], [-3.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    return Likelihoods(
        joint=torch.tensor([-5.0, -3.5, -7.0]),
        single=single,
        lengths=torch.tensor([4, 2, 3]),
        mask=mask,
        no_entity=torch.tensor([-5.0, -2.5, -7.0]) if no_entity else None,
    )


def test_joint_loss_combines_the_switched_on_terms_over_turns_with_records() -> None:
    lik = _likelihoods(no_entity=True)
    scores = torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    nll_only = joint_loss(LossConfig(use_mml=False), lik.joint, None, None)
    assert nll_only.mml is None and nll_only.ctr is None
    torch.testing.assert_close(nll_only.total, nll_loss(lik.joint))

    cfg = LossConfig(alpha=0.5, beta=2.0, gamma=3.0, use_ctr=True)
    terms = joint_loss(cfg, lik.joint, lik, scores)
    assert terms.mml is not None and terms.ctr is not None
    # The third turn has no record: MML averages over the first two only.
    torch.testing.assert_close(terms.mml, mml_loss(scores[:2], lik.single[:2], mask=lik.mask[:2]))
    torch.testing.assert_close(terms.total, 0.5 * terms.nll + 2.0 * terms.mml + 3.0 * terms.ctr)
    # d⁻ − d_1 + λ per turn: turn 1: -5/4 + 4/4 + 0.01 < 0 -> 0; turn 2: -2.5/2 + 3/2 + 0.01 = 0.26.
    assert float(terms.ctr) == pytest.approx((0.0 + 0.26) / 2)


def test_mml_and_ctr_can_leave_out_the_easy_negative() -> None:
    # loss.mml_negative=false: MML and CTR range over the retrieved set E_t alone, the negative is
    # generator input only. (METHOD.md §4, the default, adds it to the MML set: see the next test.)
    lik = _likelihoods(no_entity=True)
    scores = torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    # Turn 1: slot 2 is the negative; turn 2: its only record is.
    retrieved = torch.tensor([[True, False], [False, False], [False, False]])
    cfg = LossConfig(use_ctr=True)
    terms = joint_loss(cfg, lik.joint, lik, scores, retrieved=retrieved)
    assert terms.mml is not None and terms.ctr is not None
    # Only turn 1 keeps a retrieved record (turn 2's only record is a negative): MML over it alone is
    # −log p(r|c,e_1) = 4, whatever the negative's likelihood or score.
    assert float(terms.mml) == pytest.approx(4.0)
    assert float(terms.ctr) == pytest.approx(0.0)  # turn 1's hinge (see above) is 0; turn 2 is left out
    top = TaggedRecord(ROWS[0], NEGATIVE_TAGS, 1, 1.0, 1.0)
    negative = TaggedRecord(ROWS[1], NEGATIVE_TAGS, 0, 0.0, 0.0, negative=True)
    tagged: list[tuple[TaggedRecord, ...]] = [(top, negative), ()]
    assert retrieved_mask(tagged).tolist() == [[True, False], [False, False]]
    assert retrieved_mask(tagged, negative=True).tolist() == [[True, True], [False, False]]
    assert retrieved_mask([]).shape == (0, 1)


def test_mml_includes_the_easy_negative_by_default() -> None:
    # METHOD.md §4: the negative is added "to the generator input and to the set MML sums over".
    lik = _likelihoods(no_entity=True)
    scores = torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    top = TaggedRecord(ROWS[0], NEGATIVE_TAGS, 1, 1.0, 1.0)
    negative = TaggedRecord(ROWS[1], NEGATIVE_TAGS, 0, 0.0, 0.0, negative=True)
    tagged: list[tuple[TaggedRecord, ...]] = [(top, negative), (negative,), ()]
    cfg = LossConfig()
    assert cfg.mml_negative
    retrieved = retrieved_mask(tagged, cfg.mml_negative)
    with_negative = joint_loss(cfg, lik.joint, lik, scores, retrieved=retrieved)
    without = joint_loss(cfg, lik.joint, lik, scores, retrieved=retrieved_mask(tagged))
    assert with_negative.mml is not None and without.mml is not None
    # Both real slots of turns 1 and 2 count, exactly as with no mask at all.
    expected = mml_loss(scores[:2], lik.single[:2], mask=lik.mask[:2])
    torch.testing.assert_close(with_negative.mml, expected)
    assert float(with_negative.mml) != pytest.approx(float(without.mml))
