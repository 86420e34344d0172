"""What MML does to the retriever, measured: q, the generator's posterior, and their gold mass.

MML's gradient on retrieval score s_i is (q_i − posterior_i) / τ, with q = softmax(s / τ) and the
posterior q_i·p(r|c,e_i) / Σ_j q_j·p(r|c,e_j). The retriever therefore moves toward the records the
generator finds the gold response likely under. Two questions decide whether that helps:

- does the posterior put more mass on *gold* records (records holding an entity of the response)
  than q does? Then MML pulls toward them;
- how far apart are q and the posterior at all (total variation)? Near zero: the generator cannot
  tell its records apart, and what moves the retriever is noise.

:func:`posterior_stats` answers both per turn (``bench/quality/mml_posterior.py`` runs it on a
checkpoint); :class:`MmlMeter` averages them over training steps for ``mktod train``'s log.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mktod.meta import TaggedRecord
from mktod.metrics import normalize


def gold_mask(records: Sequence[Sequence[TaggedRecord]], gold: Sequence[frozenset[str] | set[str]]) -> Tensor:
    """[B, K] True where a turn's record holds one of its gold entities (values compared normalised)."""
    k = max((len(turn) for turn in records), default=1)
    mask = torch.zeros(len(records), max(k, 1), dtype=torch.bool)
    for b, turn in enumerate(records):
        for i, tagged in enumerate(turn):
            mask[b, i] = any(normalize(v) in gold[b] for v in tagged.record.values)
    return mask


@torch.no_grad()
def posterior_stats(
    scores: Tensor, single: Tensor, mask: Tensor, gold: Tensor, temperature: float
) -> dict[str, list[float]]:
    """Per turn (every row of ``scores[B, K]``): q's and the posterior's mass on gold records, whether
    each one's top record is gold, the share of gold records among the turn's records (a uniform
    distribution's gold mass), their total variation, and the spread (max − min) of the generator's
    single-record log-likelihoods ``single[B, K]`` over the turn's records. ``mask[B, K]``: real slots.
    """
    scores, single = scores.float(), single.float()
    neg = torch.finfo(scores.dtype).min
    log_q = torch.log_softmax(torch.where(mask, scores / temperature, neg), dim=-1)
    log_post = torch.log_softmax(torch.where(mask, log_q + single, neg), dim=-1)
    q, post = log_q.exp() * mask, log_post.exp() * mask
    pick = torch.arange(len(scores))
    high = torch.where(mask, single, torch.finfo(single.dtype).min).amax(-1)
    low = torch.where(mask, single, torch.finfo(single.dtype).max).amin(-1)
    return {
        "q_gold_mass": (q * gold).sum(-1).tolist(),
        "posterior_gold_mass": (post * gold).sum(-1).tolist(),
        "q_top_is_gold": gold[pick, q.argmax(-1)].float().tolist(),
        "posterior_top_is_gold": gold[pick, post.argmax(-1)].float().tolist(),
        "gold_share": ((gold & mask).sum(-1) / mask.sum(-1).clamp(min=1)).tolist(),
        "total_variation": (0.5 * (q - post).abs().sum(-1)).tolist(),
        "likelihood_spread": torch.where(mask.any(-1), high - low, torch.zeros_like(high)).tolist(),
    }


class MmlMeter:
    """Means of :func:`posterior_stats` over the turns seen since the last :meth:`flush`.

    Gold masses are averaged over turns with a gold record among their MML slots (elsewhere they are
    0 by construction and say nothing); total variation and spread over every turn with records.
    """

    GOLD = ("q_gold_mass", "posterior_gold_mass", "q_top_is_gold", "posterior_top_is_gold", "gold_share")
    ALL = ("total_variation", "likelihood_spread")

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._gold_turns = 0
        self._turns = 0

    def add(self, scores: Tensor, single: Tensor, mask: Tensor, gold: Tensor, temperature: float) -> None:
        """One micro-batch: ``mask`` the slots MML ranges over, ``gold`` (:func:`gold_mask`) on CPU."""
        mask, gold = mask.cpu(), gold.cpu()
        if gold.shape[-1] < mask.shape[-1]:  # slots past the gold mask's width hold no gold record
            gold = torch.nn.functional.pad(gold, (0, mask.shape[-1] - gold.shape[-1]), value=False)
        gold = gold[:, : mask.shape[-1]] & mask
        has = mask.any(-1)
        stats = posterior_stats(scores.cpu()[has], single.cpu()[has], mask[has], gold[has], temperature)
        with_gold = gold[has].any(-1).tolist()
        for name in self.ALL:
            self._sums[name] = self._sums.get(name, 0.0) + sum(stats[name])
        for name in self.GOLD:
            values = [v for v, g in zip(stats[name], with_gold, strict=True) if g]
            self._sums[name] = self._sums.get(name, 0.0) + sum(values)
        self._turns += int(has.sum())
        self._gold_turns += sum(with_gold)

    def flush(self) -> dict[str, float | int]:
        """The means so far (empty when no turn was added), then start again."""
        out: dict[str, float | int] = {}
        if self._turns:
            out["turns"] = self._turns
            out.update({name: round(self._sums[name] / self._turns, 4) for name in self.ALL})
        if self._gold_turns:
            out["gold_turns"] = self._gold_turns
            out.update({name: round(self._sums[name] / self._gold_turns, 4) for name in self.GOLD})
        self._sums, self._turns, self._gold_turns = {}, 0, 0
        return out
