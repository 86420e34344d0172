"""mktod.generators.base.dropout_off: dropout off inside the block, gradients and mode kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mktod.generators.base import dropout_off


def test_dropout_off_inside_the_block_and_mode_restored() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.9))
    x = torch.ones(8, 4)
    model.train()
    with dropout_off(model):
        assert not model.training
        out = model(x)
        torch.testing.assert_close(out, model[0](x))  # no unit dropped
        out.sum().backward()
    assert model.training and model[0].weight.grad is not None
    with dropout_off(model, off=False):
        assert model.training
    model.eval()
    with pytest.raises(RuntimeError), dropout_off(model):
        raise RuntimeError("inside")
    assert not model.training  # an eval-mode model stays in eval mode, also after an error
