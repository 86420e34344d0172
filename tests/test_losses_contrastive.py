from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mktod.losses import in_batch_contrastive


def test_hand_computed_value() -> None:
    eye = torch.eye(2)
    # logits = I / 1: each row is [1, 0] up to order, so loss = -log(e / (e + 1)) = log(1 + e^-1).
    assert in_batch_contrastive(eye, eye, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    # temperature 0.5 doubles the logits.
    assert in_batch_contrastive(eye, eye, temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2)))


def test_equals_cross_entropy_over_scaled_scores() -> None:
    torch.manual_seed(0)
    ctx, rec = torch.randn(5, 8), torch.randn(5, 8)
    expected = F.cross_entropy(ctx @ rec.T / 0.05, torch.arange(5))
    torch.testing.assert_close(in_batch_contrastive(ctx, rec, 0.05), expected)


def test_deduplicated_positives_use_labels() -> None:
    """Two contexts share a positive: it appears once, so it is never the other's negative."""
    ctx = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    rec = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    logits = ctx @ rec.T / 0.1
    manual = -(logits.log_softmax(-1)[torch.arange(3), labels]).mean()
    torch.testing.assert_close(in_batch_contrastive(ctx, rec, 0.1, labels), manual)


def test_perfectly_separated_batch_has_near_zero_loss() -> None:
    eye = torch.eye(4)
    assert in_batch_contrastive(eye, eye, temperature=0.01).item() < 1e-6


def test_gradients_reach_both_sides() -> None:
    ctx = torch.randn(3, 4, requires_grad=True)
    rec = torch.randn(3, 4, requires_grad=True)
    in_batch_contrastive(ctx, rec, 0.05).backward()
    assert ctx.grad is not None and rec.grad is not None
    assert ctx.grad.abs().sum() > 0 and rec.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("ctx_shape", "rec_shape", "labels", "message"),
    [
        ((2, 4), (2, 3), None, "expected ctx"),
        ((3, 4), (2, 4), None, "same rows"),
        ((3, 4), (2, 4), torch.tensor([0, 1]), "labels must have shape"),
    ],
)
def test_shape_errors(
    ctx_shape: tuple[int, int], rec_shape: tuple[int, int], labels: torch.Tensor | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        in_batch_contrastive(torch.zeros(ctx_shape), torch.zeros(rec_shape), 0.05, labels)


def test_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="temperature"):
        in_batch_contrastive(torch.eye(2), torch.eye(2), 0.0)
