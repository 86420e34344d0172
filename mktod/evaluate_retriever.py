"""Retrieval quality: Recall@K of a retriever on one split, condensed or large-scale (EVALUATION.md).

Condensed: each turn ranks its dialogue's own rows. Large-scale: every turn ranks the dataset-level KB,
which is indexed once. A (turn, gold entity) pair counts only if the entity is a value of the KB searched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mktod.datasets import DataPaths, get_loader
from mktod.encoder import format_context
from mktod.errors import ConfigError
from mktod.metrics import recall_at_k
from mktod.retriever import RetrieverProtocol, build_retriever
from mktod.types import KB, Record, Split

Setting = Literal["condensed", "large"]
SETTINGS: tuple[Setting, ...] = ("condensed", "large")
DEFAULT_KS = (1, 3, 5, 7)
# Turns are retrieved in chunks so a dense retriever embeds many contexts per call.
_CHUNK = 256


@dataclass(frozen=True)
class RetrievalScores:
    """Recall@K (0-100) of one retriever on one split and setting."""

    dataset: str
    setting: str
    split: str
    retriever: str
    recall: dict[int, float]  # k -> share of (turn, gold KB entity) pairs found in the top k
    all_covered: dict[int, float]  # k -> share of turns whose gold KB entities are all in the top k
    pairs: int
    turns: int
    kb_size: int | None  # the dataset-level KB size (large-scale), None for condensed

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "setting": self.setting,
            "split": self.split,
            "retriever": self.retriever,
            **{f"recall@{k}": round(v, 2) for k, v in self.recall.items()},
            **{f"all_covered@{k}": round(v, 2) for k, v in self.all_covered.items()},
            "pairs": self.pairs,
            "turns": self.turns,
            "kb_size": self.kb_size,
        }


def large_kb(dataset: str, paths: DataPaths) -> KB:
    """The dataset-level KB, or a ConfigError for datasets that have none (SMD)."""
    kb = get_loader(dataset).global_kb(paths)
    if kb is None:
        raise ConfigError(f"dataset {dataset!r} has no dataset-level KB; use the condensed setting")
    return kb


def score_split(
    retriever: RetrieverProtocol,
    split: Split,
    global_kb: KB | None,
    ks: Sequence[int] = DEFAULT_KS,
    label: str = "",
    setting: str | None = None,
) -> RetrievalScores:
    """Recall@K of `retriever` on `split`; `global_kb` None means condensed (each dialogue's own KB)."""
    if global_kb is not None:
        retriever.build_index(global_kb)
    contexts: list[str] = []
    kbs: list[KB] = []
    gold: list[tuple[str, ...]] = []
    for dialogue, t, turn in split.iter_turns():
        contexts.append(format_context(dialogue.context(t)))
        kbs.append(global_kb if global_kb is not None else dialogue.kb)
        gold.append(turn.gold_entities)
    k = max(ks)
    retrieved: list[list[Record]] = []
    for start in range(0, len(contexts), _CHUNK):
        hits = retriever.retrieve_many(contexts[start : start + _CHUNK], kbs[start : start + _CHUNK], k)
        retrieved.extend([h.record for h in turn_hits] for turn_hits in hits)
    scores = recall_at_k(retrieved, gold, kbs, ks)
    return RetrievalScores(
        dataset=split.dataset,
        setting=setting or ("large" if global_kb is not None else "condensed"),
        split=split.split,
        retriever=label or retriever.name,
        recall=dict(scores.recall),
        all_covered=dict(scores.all_covered),
        pairs=scores.pairs,
        turns=scores.turns,
        kb_size=len(global_kb) if global_kb is not None else None,
    )


def evaluate_retriever(
    dataset: str,
    setting: Setting,
    split: str,
    retriever_spec: str,
    paths: DataPaths,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    limit: int | None = None,
    device: str = "cpu",
) -> RetrievalScores:
    """Recall@K of a retriever (``bm25``, ``frequency`` or a checkpoint folder) on one split.

    `limit` keeps the first N dialogues (a quick check, not a reportable number).
    """
    if setting not in SETTINGS:
        raise ConfigError(f"setting {setting!r} is not one of {', '.join(SETTINGS)}")
    global_kb = large_kb(dataset, paths) if setting == "large" else None
    data = get_loader(dataset).load_split(split, paths)
    if limit is not None:
        data = Split(data.dataset, data.split, data.dialogues[:limit])
    retriever = build_retriever(retriever_spec, device=device)
    return score_split(retriever, data, global_kb, ks, label=retriever_spec, setting=setting)
