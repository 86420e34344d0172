"""The joint training loss of one micro-batch: L = α·NLL + β·MML (+ γ·CTR), METHOD.md §3.

:func:`joint_loss` assembles the terms of :mod:`mktod.losses` from the generator's likelihoods and the
retriever's scores. In data-parallel training each process holds a share of the micro-batch's turns;
:func:`global_counts` gives the whole micro-batch's counts, so the shares' losses sum to its mean.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from mktod.distributed import Group
from mktod.generators.base import Likelihoods
from mktod.losses import ctr_loss, mml_loss, nll_loss
from mktod.train_config import LossConfig


@dataclass(frozen=True)
class LossTerms:
    """One micro-batch's loss and its parts (scalars; a term switched off is None)."""

    total: Tensor
    nll: Tensor
    mml: Tensor | None = None
    ctr: Tensor | None = None


@dataclass(frozen=True)
class TurnCounts:
    """What each loss term's mean over turns divides by: the whole micro-batch's counts, when this
    process holds only a share of its turns (data parallel)."""

    turns: int  # NLL
    with_records: int  # MML and CTR: turns with at least one record they range over


def joint_loss(
    cfg: LossConfig,
    joint: Tensor,
    lik: Likelihoods | None,
    scores: Tensor | None,
    counts: TurnCounts | None = None,
    retrieved: Tensor | None = None,
) -> LossTerms:
    """α·NLL(joint[B]) + β·MML(scores[B,K], lik.single[B,K]) + γ·CTR(lik), over turns with records.

    ``counts``: the denominators of the means when these B turns are one process's share of a larger
    micro-batch (the shares' losses then sum to the whole batch's); None: this batch's own counts.
    ``retrieved[B,K]``: the slots MML and CTR range over (:func:`mktod.train_data.retrieved_mask`):
    the retrieved set E_t, with the easy negative unless ``loss.mml_negative`` is off. None: every
    real slot of ``lik.mask``.
    """
    nll = nll_loss(joint, turns=counts.turns if counts else None)
    total = cfg.alpha * nll
    mml = ctr = None
    if lik is not None:
        mask = lik.mask if retrieved is None else lik.mask & retrieved.to(lik.mask.device)
        has = mask.any(-1)  # a turn with an empty KB has nothing to marginalise over
        with_records = counts.with_records if counts else None
        any_records = bool(has.any()) if with_records is None else with_records > 0
        if cfg.use_mml and scores is not None and any_records:
            mml = mml_loss(
                scores[has].float(),
                lik.single[has],
                cfg.mml_temperature,
                cfg.detach_generator,
                mask[has],
                turns=with_records,
            )
            total = total + cfg.beta * mml
        if cfg.use_ctr and lik.no_entity is not None and any_records:
            ctr = ctr_loss(
                lik.single[has],
                lik.lengths[has],
                lik.no_entity[has],
                cfg.ctr_top_n,
                cfg.ctr_margin,
                mask[has],
                turns=with_records,
            )
            total = total + cfg.gamma * ctr
    return LossTerms(total, nll, mml, ctr)


def global_counts(group: Group, turns: int, retrieved: Tensor | None) -> TurnCounts | None:
    """The micro-batch's counts summed over the processes (None for one process: the batch's own).

    ``retrieved[B,K]``: this share's retrieved slots (turns with one count for MML and CTR). Every
    process calls it for every micro-batch, one with no turn of it too: it is a collective.
    """
    if group.world_size == 1:
        return None
    with_records = int(retrieved.any(-1).sum()) if retrieved is not None else 0
    total, records = group.sum([turns, with_records])
    return TurnCounts(int(total), int(records))
