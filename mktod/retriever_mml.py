"""The retriever's MML stage (`mktod train-retriever` with ``stages: [..., mml]``).

METHOD.md §3's L_MML = −log Σ_i q(e_i|c) p(r|c,e_i) with the generator frozen: the retriever learns to
put its probability mass q = softmax(s/τ) on the records under which a trained generator finds the gold
response likely. Joint training (`mktod train`) minimises the same loss while the generator learns too;
this stage aligns a retriever to a generator that is already trained (or cannot be, such as a chat LLM
that will read the records of a retriever aligned to a fine-tuned model).

Per step: each turn's top-k records by the current retriever (no gradient), tagged with meta knowledge
exactly as the pipeline tags them (:func:`mktod.train_data.retrieve_records`); their differentiable
scores (:func:`mktod.train_data.record_scores`); and the frozen generator's log p(r | c, e_i) for each
record alone. The generator does not change, so each (turn, tagged record) likelihood is computed once
and memoised: once the ranking settles, a step costs retriever passes only. A record's likelihood
depends on its tags (rank, confidence, co-occurrence), so the key is the record as the generator reads
it, tags included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mktod.checkpoint import PipelineSpec, generator_config, load_spec
from mktod.errors import ConfigError
from mktod.generators.base import GeneratorInput, TrainableGenerator, build_generator
from mktod.losses import mml_loss
from mktod.retriever import Retriever
from mktod.retriever_config import MMLStageConfig
from mktod.train_data import TrainExample, record_scores, retrieve_records
from mktod.types import KB, TaggedRecord

BatchLoss = Callable[[Sequence[int], int], tuple[Tensor, dict[str, Any]]]


class FrozenLikelihoods:
    """log p(r | c, e) of a frozen generator for one record at a time, memoised per (turn, record).

    A record is keyed by ``render(tagged)``: the text the generator reads for it, record and tags. Raw
    scores move every step; the tags they fall into (and so the likelihood) mostly do not.
    """

    def __init__(
        self,
        generator: TrainableGenerator,
        render: Callable[[TaggedRecord], str],
        batch_size: int = 16,
    ) -> None:
        self.generator = generator
        self.render = render
        self.batch_size = batch_size
        self._memo: dict[tuple[int, str], float] = {}
        self.computed = 0  # generator likelihoods computed so far
        self.reused = 0  # likelihoods served from the memo

    @torch.no_grad()
    def __call__(
        self,
        indices: Sequence[int],
        batch: Sequence[TrainExample],
        records: Sequence[Sequence[TaggedRecord]],
    ) -> Tensor:
        """[B, K] log-likelihoods of each turn's gold response given each of its records (0 = padding).

        ``indices`` identify the turns (their positions in the training examples): the memo's key.
        """
        turns = dict(zip(indices, batch, strict=True))
        keys = [
            [(i, self.render(tagged)) for tagged in recs] for i, recs in zip(indices, records, strict=True)
        ]
        missing: dict[tuple[int, str], TaggedRecord] = {}
        for row, recs in zip(keys, records, strict=True):
            for key, tagged in zip(row, recs, strict=True):
                if key not in self._memo:
                    missing.setdefault(key, tagged)
        todo = list(missing.items())
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            # One record per input: Fusion-in-Decoder and the causal prompt both reduce to p(r|c,e_i).
            inputs = [GeneratorInput(turns[i].context, (tagged,)) for (i, _), tagged in chunk]
            logp = self.generator.joint_logprobs(inputs, [turns[i].response for (i, _), _ in chunk])
            self._memo.update(zip((key for key, _ in chunk), logp.float().tolist(), strict=True))
        wanted = sum(len(row) for row in keys)
        self.computed += len(todo)
        self.reused += wanted - len(todo)
        out = torch.zeros(len(batch), max(max((len(row) for row in keys), default=0), 1))
        for b, row in enumerate(keys):
            for j, key in enumerate(row):
                out[b, j] = self._memo[key]
        return out


def load_frozen_generator(pipeline: str, device: str) -> tuple[TrainableGenerator, PipelineSpec]:
    """The generator of ``pipeline`` (a checkpoint folder or pipeline file), frozen, and its spec."""
    path = Path(pipeline)
    spec = load_spec(path)
    base = path.parent if path.is_file() else path
    generator = build_generator(generator_config(base, spec), spec.meta, device)
    if not isinstance(generator, TrainableGenerator):
        raise ConfigError(
            f"mml.generator {pipeline!r}: its generator ({spec.generator.kind}) gives no likelihoods; "
            "the mml stage needs a seq2seq or causal generator"
        )
    generator.model.eval()  # no dropout: the memoised likelihoods must not depend on when they were taken
    generator.model.requires_grad_(False)
    return generator, spec


def frozen_generator_mml(
    cfg: MMLStageConfig,
    retriever: Retriever,
    examples: Sequence[TrainExample],
    global_kb: KB | None,
    device: str,
) -> BatchLoss:
    """The MML stage's batch loss (for :func:`mktod.train_retriever.run_stage`).

    ``retriever`` wraps the encoder being trained. Large-scale (``global_kb`` given): the top-k come
    from an index of the KB re-embedded every ``cfg.refresh_every`` steps, as in joint training, and
    after every checkpoint.
    """
    generator, spec = load_frozen_generator(cfg.generator, device)
    meta = replace(spec.meta, use_negative=False)  # the easy negative is for training a generator
    k = cfg.k or spec.k
    scorer = FrozenLikelihoods(generator, meta.render, cfg.score_batch_size)
    indexed_at: list[int] = []  # the step of the last index build (a list: the closure rebinds it)

    def loss(indices: Sequence[int], step: int) -> tuple[Tensor, dict[str, Any]]:
        # Also at every checkpoint: a run resumed from one then indexes the same weights as an
        # uninterrupted run.
        due = not indexed_at or step - indexed_at[-1] >= cfg.refresh_every or step % cfg.save_every == 0
        if global_kb is not None and due:
            retriever.build_index(global_kb)
            indexed_at[:] = [step]
        batch = [examples[i] for i in indices]
        records = retrieve_records(retriever, batch, k, meta)
        scores, mask = record_scores(retriever, [ex.query for ex in batch], records)
        logp = scorer(indices, batch, records).to(scores.device)
        stats = {"likelihoods_computed": scorer.computed, "likelihoods_reused": scorer.reused}
        has = mask.any(-1)  # a turn with an empty KB has nothing to marginalise over
        if not bool(has.any()):
            return scores.sum() * 0.0, stats
        value = mml_loss(scores[has].float(), logp[has], cfg.temperature, True, mask[has])
        return value, stats

    return loss
