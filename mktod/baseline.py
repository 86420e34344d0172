"""The floor every model must beat: retrieve a training response, then fill in the current KB.

For each system turn, BM25 over training contexts (previous system response + current user
utterance) picks the most similar training turn. Its response is copied, and every KB value in it is
replaced by the value of the same attribute in the current dialogue's KB: the training record mentioned
first maps to the current record that best matches the context, the second to the next best, and so on.
Values that are not KB values (an area the user asked for, a day) are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rank_bm25 import BM25Okapi
from tqdm import tqdm

from mktod.datasets import DataPaths, get_loader
from mktod.evaluate import score_predictions, write_predictions
from mktod.metrics import EntityVocab, ResponseScores
from mktod.types import Dialogue, Record

_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("_", " "))


def _query(dialogue: Dialogue, t: int) -> str:
    previous = dialogue.turns[t - 1].response if t > 0 else ""
    return f"{previous} {dialogue.turns[t].user}"


def _context_text(dialogue: Dialogue, t: int) -> str:
    return " ".join(u.text for u in dialogue.context(t))


def rank_records(records: Sequence[Record], context: str) -> list[Record]:
    """Records ordered by how many of their values occur in the context (stable for ties)."""
    padded = f" {context} "

    def hits(record: Record) -> int:
        return sum(1 for v in record.values if v and f" {v} " in padded)

    return sorted(records, key=hits, reverse=True)


def fill_response(response: str, source_kb: Sequence[Record], target_ranked: Sequence[Record]) -> str:
    """Replace the source KB's values in ``response`` by the corresponding target values."""
    words = response.split()
    # Which record and attribute each word (a `_`-joined value is one word) comes from.
    where: dict[str, tuple[Record, str]] = {}
    for record in source_kb:
        for attr, value in record.fields.items():
            where.setdefault(value, (record, attr))
    order: list[str] = []  # source record ids in order of first mention
    for word in words:
        if word in where and where[word][0].id not in order:
            order.append(where[word][0].id)
    out = []
    for word in words:
        if word not in where or not target_ranked:
            out.append(word)
            continue
        record, attr = where[word]
        target = target_ranked[min(order.index(record.id), len(target_ranked) - 1)]
        out.append(target.fields.get(attr, word))
    return " ".join(out)


@dataclass(frozen=True)
class _TrainTurn:
    response: str
    kb: tuple[Record, ...]


def baseline_predictions(train: Sequence[Dialogue], evaluated: Sequence[Dialogue]) -> list[str]:
    pool = [_TrainTurn(turn.response, d.kb.records) for d in train for turn in d.turns]
    queries = [_tokens(_query(d, t)) for d in train for t in range(len(d.turns))]
    bm25 = BM25Okapi([q or ["<empty>"] for q in queries])
    predictions = []
    total = sum(len(d.turns) for d in evaluated)
    with tqdm(total=total, desc="baseline", unit="turn", disable=total < 200) as bar:
        for dialogue in evaluated:
            for t in range(len(dialogue.turns)):
                scores = bm25.get_scores(_tokens(_query(dialogue, t)) or ["<empty>"])
                best = pool[int(scores.argmax())]
                ranked = rank_records(dialogue.kb.records, _context_text(dialogue, t))
                predictions.append(fill_response(best.response, best.kb, ranked))
                bar.update()
    return predictions


def run_baseline(dataset: str, split: str, out: Path, paths: DataPaths) -> ResponseScores:
    loader = get_loader(dataset)
    train = loader.load_split("train", paths)
    evaluated = loader.load_split(split, paths)
    predictions = baseline_predictions(train.dialogues, evaluated.dialogues)
    write_predictions(out, predictions)
    vocab = EntityVocab.from_file(dataset, loader.entity_file(paths))
    return score_predictions(evaluated, predictions, vocab, source=str(out))
