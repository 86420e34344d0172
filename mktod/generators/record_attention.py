"""Attention masks for the decoder-only generator's ``parallel`` record layout (issue #7, item 2).

In the ``causal`` layout every token sees every earlier token, so record i's keys and values depend on
records 1..i-1 and the one-record likelihoods p(r|c,e_i) must recompute record i. In the ``parallel``
layout each record sees the shared prefix (instruction + context) and itself only, the way FiD encodes
passages independently; the tail and the response see everything. Positions stay the natural
left-to-right ones, so generation needs only a custom mask for the prompt. Then the records' keys and
values from the joint pass are exactly those of any one-record view, and log p(r|c,e_i) is the response
read with record i as the only visible record: MML adds K short (tail + response) rows, not K records.

Block ids label each token: 0 for shared tokens (prefix, tail, response, padding), i > 0 for record i.
"""

from __future__ import annotations

import torch
from torch import Tensor

RECORD_ATTENTION = ("causal", "parallel")


def block_mask(attention: Tensor, blocks: Tensor, query_from: int = 0) -> Tensor:
    """Which keys each query may attend: bool [N, 1, Lq, L] for the queries at ``query_from``..L-1.

    attention[N, L]: 1 for real tokens. blocks[N, L]: block ids. A query sees earlier real tokens except
    those of another record; every query sees itself, so padding rows never have an empty softmax.
    """
    width = attention.shape[1]
    q = torch.arange(query_from, width, device=attention.device)
    k = torch.arange(width, device=attention.device)
    causal = k.unsqueeze(0) <= q.unsqueeze(1)  # [Lq, L]
    bq, bk = blocks[:, query_from:].unsqueeze(2), blocks.unsqueeze(1)  # [N, Lq, 1], [N, 1, L]
    visible = (bq == 0) | (bk == 0) | (bq == bk)
    allowed = causal.unsqueeze(0) & visible & attention.bool().unsqueeze(1)
    allowed |= (k.unsqueeze(0) == q.unsqueeze(1)).unsqueeze(0)
    return allowed.unsqueeze(1)


def only_record(blocks: Tensor, attention: Tensor, record: Tensor, end: Tensor) -> Tensor:
    """bool [N, L]: the real tokens before ``end[N]`` that are shared or of block ``record[N]``.

    With ``end`` = where the tail starts, that is the prefix and record i: what a one-record view reads
    (record = -1: the prefix alone).
    """
    before = torch.arange(blocks.shape[1], device=blocks.device).unsqueeze(0) < end.unsqueeze(1)
    return attention.bool() & before & ((blocks == 0) | (blocks == record.unsqueeze(1)))


def continuation_mask(visible_cache: Tensor, attention: Tensor) -> Tensor:
    """bool [N, 1, Lq, Lc + Lq]: new rows (attention[N, Lq], causal among themselves) that see the cached
    keys marked in visible_cache[N, Lc]."""
    n, lq = attention.shape
    cached = visible_cache.unsqueeze(1).expand(n, lq, -1)
    idx = torch.arange(lq, device=attention.device)
    causal = (idx.unsqueeze(0) <= idx.unsqueeze(1)).unsqueeze(0) & attention.bool().unsqueeze(1)
    causal |= (idx.unsqueeze(0) == idx.unsqueeze(1)).unsqueeze(0)
    return torch.cat([cached, causal], dim=2).unsqueeze(1)


def as_model_mask(allowed: Tensor, attn_implementation: str, dtype: torch.dtype) -> Tensor:
    """The 4D mask in the form the attention kernel takes: bool for SDPA, additive float for eager."""
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        zeros = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zeros, torch.finfo(dtype).min)
    raise ValueError(
        f"record_attention: parallel needs a custom attention mask, which {attn_implementation!r} attention "
        "does not take; load the model with attn_implementation='sdpa' or 'eager'"
    )
