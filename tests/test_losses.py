"""Losses against hand-computed values (METHOD.md §3)."""

from __future__ import annotations

import math

import pytest
import torch

from mktod.losses import ctr_loss, mml_loss, nll_loss, sequence_logprob

# ------------------------------------------------------------------ generator-side losses: NLL, MML, ctr


def test_sequence_logprob_sums_token_logprobs_and_skips_padding() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(4.0), 0.0], [5.0, 5.0]]])  # [1, 3, 2]
    labels = torch.tensor([[1, 0, -100]])
    # p = 3/4 then 4/5; the padded third position adds nothing.
    expected = math.log(0.75) + math.log(0.8)
    assert sequence_logprob(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_nll_sequence_and_token_normalisation() -> None:
    logp = torch.tensor([-2.0, -4.0])
    assert nll_loss(logp).item() == pytest.approx(3.0)
    assert nll_loss(logp, torch.tensor([1, 3]), normalise="token").item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="lengths"):
        nll_loss(logp, normalise="token")


def test_mml_matches_hand_computation() -> None:
    # q = softmax(0, ln 3) = (1/4, 3/4); p = (0.2, 0.4); Σ q p = 0.05 + 0.3 = 0.35.
    scores = torch.tensor([[0.0, math.log(3.0)]])
    gen = torch.tensor([[math.log(0.2), math.log(0.4)]])
    assert mml_loss(scores, gen).item() == pytest.approx(-math.log(0.35), abs=1e-6)
    # Temperature 2: q ∝ (1, √3).
    q = torch.tensor([1.0, math.sqrt(3.0)]) / (1 + math.sqrt(3.0))
    expected = -math.log(q[0].item() * 0.2 + q[1].item() * 0.4)
    assert mml_loss(scores, gen, temperature=2.0).item() == pytest.approx(expected, abs=1e-6)


def test_mml_with_one_record_is_nll() -> None:
    scores = torch.tensor([[5.0], [-3.0]])
    gen = torch.tensor([[-12.5], [-7.0]])
    assert mml_loss(scores, gen).item() == pytest.approx(nll_loss(gen[:, 0]).item())


def test_mml_works_in_log_space_for_long_responses() -> None:
    # p = e^-2000: multiplying raw probabilities would give 0 and an infinite loss.
    gen = torch.tensor([[-2000.0, -2001.0]])
    loss = mml_loss(torch.zeros(1, 2), gen)
    expected = -(math.log(0.5) + (-2000.0) + math.log1p(math.exp(-1.0)))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(expected, rel=1e-6)


def test_mml_gradients_reach_retriever_and_optionally_generator() -> None:
    scores = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    gen = torch.tensor([[-1.0, -5.0, -9.0]], requires_grad=True)
    mml_loss(scores, gen).backward()
    assert scores.grad is not None and gen.grad is not None
    # The record that explains the response best is pushed up, the others down.
    assert scores.grad[0, 0] < 0 < scores.grad[0, 2]
    assert gen.grad.abs().sum() > 0

    scores.grad, gen.grad = None, None
    mml_loss(scores, gen, detach_generator=True).backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    assert gen.grad is None


def test_mml_mask_ignores_padded_records_even_when_nan() -> None:
    scores = torch.tensor([[0.0, math.log(3.0), 7.0]], requires_grad=True)
    gen = torch.tensor([[math.log(0.2), math.log(0.4), float("nan")]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    loss = mml_loss(scores, gen, mask=mask)
    assert loss.item() == pytest.approx(-math.log(0.35), abs=1e-6)
    loss.backward()
    assert scores.grad is not None and gen.grad is not None
    assert torch.isfinite(scores.grad).all() and torch.isfinite(gen.grad).all()
    assert scores.grad[0, 2] == 0 and gen.grad[0, 2] == 0
    with pytest.raises(ValueError, match="at least one"):
        mml_loss(scores, gen, mask=torch.zeros(1, 3, dtype=torch.bool))


def test_mml_averages_over_turns() -> None:
    scores = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    gen = torch.tensor([[math.log(0.2), math.log(0.4)], [math.log(0.5), math.log(0.5)]])
    expected = (-math.log(0.35) - math.log(0.5)) / 2
    assert mml_loss(scores, gen).item() == pytest.approx(expected, abs=1e-6)


def test_ctr_hinge_on_length_normalised_logprobs() -> None:
    gen = torch.tensor([[-2.0, -5.0]])  # d = (-1, -2.5) with |r| = 2
    lengths = torch.tensor([2])
    # d⁻ = -1.5: top-1 beats it by more than λ (no loss); top-2 loses by 1 (hinge 1.01).
    assert ctr_loss(gen, lengths, torch.tensor([-3.0])).item() == pytest.approx(0.0)
    assert ctr_loss(gen, lengths, torch.tensor([-3.0]), top_n=2).item() == pytest.approx(1.01)
    # d⁻ = -0.5: top-1 hinge = -0.5 + 1 + 0.01.
    assert ctr_loss(gen, lengths, torch.tensor([-1.0])).item() == pytest.approx(0.51)
    assert ctr_loss(gen, lengths, torch.tensor([-1.0]), margin=0.1).item() == pytest.approx(0.6)


def test_ctr_mask_and_batch_mean() -> None:
    gen = torch.tensor([[-2.0, -5.0], [-1.0, float("nan")]], requires_grad=True)
    lengths = torch.tensor([2, 1])
    no_entity = torch.tensor([-3.0, -0.5])
    mask = torch.tensor([[True, True], [True, False]])
    # turn 1: 0 + 1.01; turn 2: max(0, -0.5 + 1 + 0.01) = 0.51, its padded second record ignored.
    loss = ctr_loss(gen, lengths, no_entity, top_n=2, mask=mask)
    assert loss.item() == pytest.approx((1.01 + 0.51) / 2)
    loss.backward()
    assert gen.grad is not None and torch.isfinite(gen.grad).all()
    with pytest.raises(ValueError, match="top_n"):
        ctr_loss(gen, lengths, no_entity, top_n=0)
