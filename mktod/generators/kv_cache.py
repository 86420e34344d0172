"""The name a Hugging Face model takes and returns its key/value cache under, across transformers 5.x.

transformers 5.x renamed the ``past_key_values`` argument and output field to ``cache``. Since then the
old argument warns (a FutureWarning on every training run) and goes in 5.40, while the project accepts
every 5.x (``transformers>=5.0,<6``), some of which know only the old name. So the causal generator asks
the model which name its forward takes instead of naming either.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

NEW, OLD = "cache", "past_key_values"


def cache_keyword(model: nn.Module) -> str:
    """The keyword ``model.forward`` (and its ``generate``) takes a key/value cache under."""
    # inspect.signature follows the decorators' __wrapped__, so it sees the forward as written.
    parameters = inspect.signature(model.forward).parameters
    return NEW if NEW in parameters else OLD


def output_cache(output: Any) -> Any:
    """The key/value cache a forward with ``use_cache=True`` returned, under either field name."""
    # Reading the old field on a new output works but logs a deprecation warning, so the new one first.
    cache = getattr(output, NEW, None)
    if cache is None:
        cache = getattr(output, OLD, None)
    if cache is None:
        raise ValueError(f"{type(output).__name__} holds no key/value cache: was use_cache=True passed?")
    return cache
