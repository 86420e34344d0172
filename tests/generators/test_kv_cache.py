"""The key/value cache's name across transformers 5.x: asked of the model, never a deprecated one used."""

from __future__ import annotations

import functools
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from test_causal import RESPONSES, batch, make
from torch import nn

from mktod.generators.kv_cache import cache_keyword, output_cache


class NewStyle(nn.Module):
    def forward(self, input_ids: Any = None, cache: Any = None) -> None:
        return None


class OldStyle(nn.Module):
    def forward(self, input_ids: Any = None, past_key_values: Any = None) -> None:
        return None


def renamed(forward: Any) -> Any:
    """A decorator in the manner of transformers' deprecate_kwarg: the wrapper takes **kwargs only."""

    @functools.wraps(forward)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return forward(*args, **kwargs)

    return wrapper


class Decorated(nn.Module):
    @renamed
    def forward(self, input_ids: Any = None, cache: Any = None) -> None:
        return None


def test_the_keyword_is_the_one_the_forward_takes() -> None:
    assert cache_keyword(NewStyle()) == "cache"
    assert cache_keyword(OldStyle()) == "past_key_values"
    assert cache_keyword(Decorated()) == "cache"  # seen through the decorator's wrapper


def test_the_returned_cache_under_either_field() -> None:
    assert output_cache(SimpleNamespace(cache="kv")) == "kv"
    assert output_cache(SimpleNamespace(past_key_values="kv")) == "kv"
    assert output_cache(SimpleNamespace(cache="new", past_key_values="old")) == "new"
    with pytest.raises(ValueError, match="use_cache=True"):
        output_cache(SimpleNamespace(last_hidden_state=None, cache=None))


@pytest.mark.parametrize("layout", ["causal", "parallel"])
def test_likelihoods_and_generation_use_no_deprecated_cache_name(layout: str) -> None:
    # The installed transformers' own name: the generator must pass the cache under it, warning-free.
    gen = make(max_target_tokens=3, record_attention=layout)  # type: ignore[arg-type]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            gen.joint_and_single_logprobs(batch(), RESPONSES, with_no_entity=True)
        gen.generate(batch())
    named = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert named == []
