"""What one step of joint training (METHOD.md §2-4) feeds the generator and the losses.

- :func:`build_examples`: one example per system turn: the context, the gold response and the KB the
  turn searches (its dialogue's rows, condensed; the dataset-level KB, large-scale).
- :func:`retrieve_records`: top-K by the current retriever (no gradient), tagged with meta knowledge
  exactly as the pipeline tags them at inference, plus the easy negative in training.
- :func:`record_scores`: the same records re-encoded WITH gradient: the differentiable scores [B, K]
  that the MML loss turns into q.

The easy negative is the lowest-scored record of the turn's KB outside the top-K. When the KB has no
such record (condensed SMD: K = 8 is the whole KB, and some condensed MWOZ/CamRest KBs are short) the
negative is the lowest-scored record of a *donor* KB: another training dialogue's KB, drawn from a
generator seeded by (seed, micro-batch, turn), so a resumed run draws the same donors. This stands in
for METHOD.md's "dataset-level KB" of SMD, which does not exist as such; scoring all ~17k rows of every
SMD dialogue at every step would cost more than the step itself.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mktod.encoder import format_context
from mktod.kb import linearise, value_text
from mktod.meta import MetaConfig, TaggedRecord, negative_record
from mktod.metrics import normalize
from mktod.retriever import Retriever, RetrieverProtocol
from mktod.types import KB, Hit, Record, Split, Utterance


@dataclass(frozen=True)
class TrainExample:
    context: tuple[Utterance, ...]  # what the generator reads
    query: str  # the formatted context the retriever reads
    response: str  # the training target
    kb: KB  # the KB this turn searches
    dialogue: int  # index of the dialogue in the split (donor KBs must come from another one)
    # The response's KB entities, normalised (mktod.metrics.normalize): which records are "gold" in
    # the training log's MML diagnostics (mktod.mml_diag). Training itself never reads them.
    gold: frozenset[str] = frozenset()


def build_examples(split: Split, global_kb: KB | None) -> list[TrainExample]:
    """One example per system turn of ``split``; every turn searches ``global_kb`` when it is given.

    Targets are in spoken form (``pizza hut``, not ``pizza_hut``): metrics compare after the same
    normalisation (mktod.metrics.normalize), and word-piece tokenizers split ``_`` into its own token.
    """
    out = []
    for index, dialogue in enumerate(split.dialogues):
        for t, turn in enumerate(dialogue.turns):
            context = dialogue.context(t)
            kb = global_kb if global_kb is not None else dialogue.kb
            gold = frozenset(normalize(e) for e in turn.gold_entities)
            out.append(
                TrainExample(context, format_context(context), value_text(turn.response), kb, index, gold)
            )
    return out


def data_fingerprint(examples: Sequence[TrainExample]) -> str:
    """SHA-256 of exactly what training reads (contexts, targets, KB rows): the data version."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    for ex in examples:
        digest.update(f"{ex.query}\t{ex.response}\t{ex.kb.name}:{len(ex.kb)}\n".encode())
        if id(ex.kb) not in seen:
            seen.add(id(ex.kb))
            for record in ex.kb:
                digest.update(f"{record.id}\t{linearise(record)}\n".encode())
    return digest.hexdigest()


def donor_kbs(examples: Sequence[TrainExample]) -> list[tuple[int, KB]]:
    """The distinct non-empty KBs of the training data, each with its dialogue index."""
    seen: dict[int, tuple[int, KB]] = {}
    for ex in examples:
        if len(ex.kb) and id(ex.kb) not in seen:
            seen[id(ex.kb)] = (ex.dialogue, ex.kb)
    return list(seen.values())


def _pick_donor(donors: Sequence[tuple[int, KB]], example: TrainExample, seed: str) -> KB | None:
    own = set(example.kb)
    rng = random.Random(seed)  # a str seed is hashed with SHA-512: the same draw in every process
    for _ in range(8):  # a few draws find a KB with a record of its own; identical KBs are rare
        dialogue, kb = donors[rng.randrange(len(donors))]
        if dialogue != example.dialogue and any(r not in own for r in kb):
            return kb
    return None


@torch.no_grad()
def retrieve_records(
    retriever: RetrieverProtocol,  # any retriever: only retrieve_many is used
    batch: Sequence[TrainExample],
    k: int,
    meta: MetaConfig,
    donors: Sequence[tuple[int, KB]] = (),
    seed: str = "",
) -> list[tuple[TaggedRecord, ...]]:
    """Per turn: the top-``k`` records tagged with meta knowledge, then (``meta.use_negative``) the negative.

    The whole KB is ranked (a condensed KB has a handful of rows, the dataset-level KB is indexed), so
    the negative is the last of the same ranking. ``seed`` makes donor draws reproducible.
    """
    width = max((len(ex.kb) for ex in batch), default=1)
    ranked = retriever.retrieve_many([ex.query for ex in batch], [ex.kb for ex in batch], max(width, 1))
    out: list[tuple[TaggedRecord, ...]] = []
    needs_donor: list[int] = []
    for b, (ex, hits) in enumerate(zip(batch, ranked, strict=True)):
        tagged = meta.tag(hits[:k], ex.context)
        if meta.use_negative and len(hits) > k:
            negative = negative_record(
                [h.record for h in hits], [h.score for h in hits], [h.record for h in hits[:k]]
            )
            tagged = (*tagged, negative)
        elif meta.use_negative:
            needs_donor.append(b)
        out.append(tagged)
    if needs_donor and donors:
        picked = [(b, _pick_donor(donors, batch[b], f"{seed}:{b}")) for b in needs_donor]
        found = [(b, kb) for b, kb in picked if kb is not None]
        donor_hits = retriever.retrieve_many(
            [batch[b].query for b, _ in found],
            [kb for _, kb in found],
            max((len(kb) for _, kb in found), default=1),
        )
        for (b, _), hits in zip(found, donor_hits, strict=True):
            out[b] = (*out[b], _negative_from(hits, batch[b].kb))
    return out


def _negative_from(hits: Sequence[Hit], own: KB) -> TaggedRecord:
    return negative_record([h.record for h in hits], [h.score for h in hits], list(own))


def retrieved_mask(records: Sequence[Sequence[TaggedRecord]], negative: bool = False) -> Tensor:
    """[B, K] True where a turn's slot holds a record MML sums over: not padding, and not the easy
    negative unless ``negative`` (``loss.mml_negative``; METHOD.md §4 includes it).

    K is the longest turn's record count (at least 1), the layout of the generator's likelihoods.
    """
    k = max((len(turn) for turn in records), default=0)
    mask = torch.zeros(len(records), max(k, 1), dtype=torch.bool)
    for b, turn in enumerate(records):
        for i, tagged in enumerate(turn):
            mask[b, i] = negative or not tagged.negative
    return mask


def record_scores(
    retriever: Retriever, queries: Sequence[str], records: Sequence[Sequence[TaggedRecord]]
) -> tuple[Tensor, Tensor]:
    """Differentiable retrieval scores [B, K] of each turn's records (in order) and their mask [B, K].

    Records shared between turns (always, large-scale) are encoded once; padding slots score 0 and are
    masked.
    """
    unique: dict[Record, int] = {}
    for turn in records:
        for tagged in turn:
            unique.setdefault(tagged.record, len(unique))
    k = max((len(turn) for turn in records), default=0)
    index = torch.zeros(len(records), max(k, 1), dtype=torch.long)
    mask = torch.zeros(len(records), max(k, 1), dtype=torch.bool)
    for b, turn in enumerate(records):
        for i, tagged in enumerate(turn):
            index[b, i] = unique[tagged.record]
            mask[b, i] = True
    if not unique:
        return torch.zeros(index.shape, device=retriever.encoder.device), mask.to(retriever.encoder.device)
    scores = retriever.scores(queries, list(unique))  # [B, U], with gradient
    gathered = scores.gather(1, index.to(scores.device))
    return torch.where(mask.to(scores.device), gathered, torch.zeros_like(gathered)), mask.to(scores.device)
