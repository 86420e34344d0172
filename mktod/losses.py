"""Training losses as pure tensor functions of scores, log-probs and labels (shapes in each docstring).

Nothing here reads a config or owns parameters; callers pass what a loss needs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def in_batch_contrastive(
    ctx: Tensor, rec: Tensor, temperature: float = 0.05, labels: Tensor | None = None
) -> Tensor:
    """In-batch contrastive loss (InfoNCE) of the retriever warm-up; a scalar, mean over the batch.

    ctx[B, d]: context embeddings. rec[M, d]: record embeddings, every row a candidate for every context.
    labels[B] (long, in [0, M)): the row of `rec` that is context b's positive; every other row is a
    negative. Default: M == B and labels = arange(B) (row b is context b's positive). Callers that
    de-duplicate positives (so a record is never its own negative) pass M <= B rows and the labels.

    loss = mean_b -log softmax((ctx @ rec.T) / temperature)[b, labels[b]]
    """
    if ctx.dim() != 2 or rec.dim() != 2 or ctx.shape[1] != rec.shape[1]:
        raise ValueError(f"expected ctx[B, d] and rec[M, d], got {tuple(ctx.shape)} and {tuple(rec.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if labels is None:
        if ctx.shape[0] != rec.shape[0]:
            raise ValueError(
                f"without labels ctx and rec need the same rows, got {ctx.shape[0]} and {rec.shape[0]}"
            )
        labels = torch.arange(ctx.shape[0], device=ctx.device)
    elif labels.shape != (ctx.shape[0],):
        raise ValueError(f"labels must have shape [{ctx.shape[0]}], got {tuple(labels.shape)}")
    logits = ctx @ rec.T / temperature
    return F.cross_entropy(logits, labels.to(logits.device))


def sequence_logprob(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Sum of the target tokens' log-probabilities per sequence: log p(r | ...) [N].

    logits[N, T, V]: decoder logits aligned with labels[N, T] (long); positions equal to `ignore_index`
    (padding) contribute nothing. Summed in log space, never as a product of probabilities.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits[N, T, V] and labels[N, T], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    mask = labels != ignore_index
    safe = labels.masked_fill(~mask, 0)
    token_logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logp * mask).sum(-1)


# ---------------------------------------------------------------------------- generator-side (NLL, MML, ctr)
# Shapes: B turns, K retrieved records per turn.
# ``turns`` (optional): what a mean over turns divides by instead of B. Data-parallel training passes the
# whole micro-batch's count, so the shards' losses (and gradients) sum to the whole batch's mean.


def _turn_mean(per_turn: Tensor, turns: float | None) -> Tensor:
    return per_turn.mean() if turns is None else per_turn.sum() / turns


def nll_loss(
    seq_logprob: Tensor,
    lengths: Tensor | None = None,
    normalise: Literal["sequence", "token"] = "sequence",
    turns: float | None = None,
) -> Tensor:
    """L_NLL from seq_logprob[B] (log p(r|c,E) per turn) -> scalar.

    ``sequence``: mean over turns of −log p. ``token``: total −log p over total target tokens
    (``lengths[B]``), i.e. the usual per-token cross-entropy of Hugging Face models.
    """
    if normalise == "sequence":
        return -_turn_mean(seq_logprob, turns)
    if turns is not None:
        raise ValueError("nll_loss: turns applies to normalise='sequence' only")
    if normalise == "token":
        if lengths is None:
            raise ValueError("nll_loss(normalise='token') needs the target lengths")
        return -seq_logprob.sum() / lengths.sum().clamp(min=1)
    raise ValueError(f"unknown normalise {normalise!r}; use sequence or token")


def _record_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {tuple(like.shape)}")
    if not bool(mask.any(-1).all()):
        raise ValueError("every turn needs at least one unmasked record")
    return mask.bool()


def mml_loss(
    retr_scores: Tensor,
    gen_logprobs: Tensor,
    temperature: float = 1.0,
    detach_generator: bool = False,
    mask: Tensor | None = None,
    turns: float | None = None,
) -> Tensor:
    """L_MML = −log Σ_i q_i p(r|c,e_i), averaged over turns -> scalar.

    retr_scores[B,K]: retrieval scores s (differentiable). gen_logprobs[B,K]: log p(r|c,e_i), the summed
    token log-probs of the response given one record. q = softmax(s/τ) over the unmasked records.
    mask[B,K] (bool, optional): False for padding when a turn has fewer than K records.
    The sum is taken in log space (logsumexp); raw probabilities of whole responses underflow.
    ``detach_generator`` stops the MML gradient reaching the generator (only the retriever learns).
    """
    valid = _record_mask(mask, retr_scores)
    neg_inf = torch.tensor(float("-inf"), dtype=retr_scores.dtype, device=retr_scores.device)
    log_q = F.log_softmax(torch.where(valid, retr_scores / temperature, neg_inf), dim=-1)
    gen = gen_logprobs.detach() if detach_generator else gen_logprobs
    # where(), not +/−inf arithmetic: padded log-probs may be garbage (even NaN) and must not leak.
    joint = torch.where(valid, log_q + torch.where(valid, gen, torch.zeros_like(gen)), neg_inf)
    return -_turn_mean(torch.logsumexp(joint, dim=-1), turns)


def ctr_loss(
    gen_logprobs: Tensor,
    resp_lengths: Tensor,
    no_entity_logprobs: Tensor,
    top_n: int = 1,
    margin: float = 0.01,
    mask: Tensor | None = None,
    turns: float | None = None,
) -> Tensor:
    """Contrastive meta-knowledge loss (the "ctr" variant) -> scalar.

    gen_logprobs[B,K]: log p(r|c,e_i), records in retrieval order (column 0 = rank 1).
    resp_lengths[B]: |r| in tokens. no_entity_logprobs[B]: log p(r|c) with no record at all.
    d_i = log p(r|c,e_i)/|r|, d⁻ = log p(r|c)/|r|; L = Σ_{i<top_n} max(0, d⁻ − d_i + λ), mean over turns.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    valid = _record_mask(mask, gen_logprobs)[:, :top_n]
    length = resp_lengths.to(gen_logprobs.dtype).clamp(min=1)
    d = gen_logprobs[:, :top_n] / length[:, None]
    d_neg = no_entity_logprobs / length
    hinge = F.relu(d_neg[:, None] - d + margin)
    return _turn_mean(torch.where(valid, hinge, torch.zeros_like(hinge)).sum(-1), turns)
