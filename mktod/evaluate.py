"""Offline evaluation: score a predictions file (one response per system turn) against a split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tqdm import tqdm

from mktod.datasets import DataPaths, get_loader
from mktod.errors import DataError, GeneratorUnavailable
from mktod.metrics import (
    EntityVocab,
    RecallScores,
    ResponseScores,
    evaluate_responses,
    recall_at_k,
    score_turns,
)
from mktod.significance import PairedDifference, paired_bootstrap_f1
from mktod.types import KB, Reply, Split, TaggedRecord

if TYPE_CHECKING:
    # The pipeline pulls in torch and the models; scoring a predictions file must not need them.
    from mktod.pipeline import Pipeline


def read_predictions(path: Path) -> list[str]:
    """One prediction per line; a final newline does not add an empty prediction."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "predictions file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def write_predictions(path: Path, predictions: Sequence[str]) -> None:
    for i, pred in enumerate(predictions):
        if "\n" in pred or "\r" in pred:
            raise ValueError(f"prediction {i + 1} contains a line break; one prediction per line")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + "\n" for p in predictions), encoding="utf-8")


def references(split: Split) -> list[str]:
    return [turn.response for _, _, turn in split.iter_turns()]


def score_predictions(
    split: Split,
    predictions: Sequence[str],
    vocab: EntityVocab,
    source: str = "predictions",
    limit: int | None = None,
) -> ResponseScores:
    """Score one response per system turn; with ``limit`` the predictions are the first N turns only
    (as `mktod evaluate --checkpoint ... --limit N` writes them)."""
    refs = first_turns(references(split), limit)
    if len(predictions) != len(refs):
        where = f"{len(refs)} system turns of {split.dataset} {split.split}"
        hint = "" if limit is not None else "; pass --limit N if the file holds only the first N turns"
        raise DataError(
            source,
            f"has {len(predictions)} predictions for {where}; write one response per line, in the "
            f"canonical order of the split{hint}",
        )
    return evaluate_responses(split.dataset, predictions, refs, vocab)


T = TypeVar("T")


def first_turns(turns: Sequence[T], limit: int | None) -> list[T]:
    """The first ``limit`` turns (all without a limit); a limit below 1 is an error naming --limit."""
    if limit is None:
        return list(turns)
    if limit < 1:
        raise DataError("--limit", f"must be a positive number of turns, got {limit}")
    return list(turns[:limit])


def evaluate_file(
    dataset: str, split_name: str, predictions_path: Path, paths: DataPaths, limit: int | None = None
) -> ResponseScores:
    loader = get_loader(dataset)
    split = loader.load_split(split_name, paths)
    vocab = EntityVocab.from_file(dataset, loader.entity_file(paths))
    preds = read_predictions(predictions_path)
    return score_predictions(split, preds, vocab, source=str(predictions_path), limit=limit)


@dataclass(frozen=True)
class Comparison:
    """Two predictions files scored on the same turns, and their Entity F1 difference (first - second)."""

    dataset: str
    split: str
    files: tuple[Path, Path]
    scores: tuple[ResponseScores, ResponseScores]
    difference: PairedDifference

    def as_json(self) -> dict[str, object]:
        d = self.difference
        return {
            "dataset": self.dataset,
            "split": self.split,
            "turns": self.scores[0].turns,
            "dialogues": d.groups,
            **{
                key: {"predictions": str(path), "entity_f1": score.entity_f1, "bleu": score.bleu}
                for key, path, score in zip(("first", "second"), self.files, self.scores, strict=True)
            },
            "entity_f1_difference": d.difference,
            "interval": [d.low, d.high],
            "confidence": d.confidence,
            "draws": d.draws,
            "excludes_zero": d.excludes_zero,
        }


def compare_files(
    dataset: str,
    split_name: str,
    first: Path,
    second: Path,
    paths: DataPaths,
    limit: int | None = None,
    draws: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Both predictions files scored, and F1(first) - F1(second) with a paired bootstrap interval over
    the split's dialogues (:mod:`mktod.significance`). ``limit``: the files hold the first N turns only
    (as `mktod evaluate --limit N` writes them)."""
    loader = get_loader(dataset)
    split = loader.load_split(split_name, paths)
    vocab = EntityVocab.from_file(dataset, loader.entity_file(paths))
    turns = first_turns(list(split.iter_turns()), limit)
    refs = [turn.response for _, _, turn in turns]
    scores, counts = [], []
    for path in (first, second):
        preds = read_predictions(path)
        if len(preds) != len(refs):
            hint = "" if limit is not None else "; pass --limit N if the file holds only the first N turns"
            where = f"{len(refs)} system turns of {dataset} {split_name}"
            raise DataError(path, f"has {len(preds)} predictions for {where}{hint}")
        scored, turn_counts = score_turns(dataset, preds, refs, vocab)
        scores.append(scored)
        counts.append(turn_counts)
    groups = [dialogue.id for dialogue, _, _ in turns]
    difference = paired_bootstrap_f1(counts[0], counts[1], groups, draws=draws, seed=seed)
    return Comparison(dataset, split_name, (first, second), (scores[0], scores[1]), difference)


# --- generating and scoring with a pipeline ----------------------------------------------------


@dataclass(frozen=True)
class PipelineEvaluation:
    """Metrics of a pipeline on (the first ``turns`` system turns of) a split, and where outputs went."""

    responses: ResponseScores
    retrieval: RecallScores
    turns: int
    predictions_path: Path
    records_path: Path


def _record_json(tagged: TaggedRecord) -> dict[str, object]:
    return {
        "id": tagged.record.id,
        "rank": tagged.rank,
        "score": tagged.score,
        "confidence": tagged.confidence,
        "tags": [tagged.tags.cooccurrence, tagged.tags.confidence, tagged.tags.order],
        "fields": dict(tagged.record.fields),
    }


def evaluate_pipeline(
    pipeline: Pipeline,
    split: Split,
    vocab: EntityVocab,
    out_dir: Path,
    global_kb: KB | None = None,
    limit: int | None = None,
    ks: Sequence[int] = (1, 3, 5, 7),
) -> PipelineEvaluation:
    """Generate a response for every system turn (or the first ``limit``) and score them.

    ``global_kb`` set means the large-scale setting: every turn retrieves from it; otherwise each turn
    retrieves from its dialogue's own KB. Writes ``predictions.txt`` (the line format ``mktod evaluate
    --predictions`` reads) and ``records.jsonl`` (each turn's retrieved records with meta knowledge).
    """
    turns = list(split.iter_turns())
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        turns = turns[:limit]
    if global_kb is not None:
        pipeline.retriever.build_index(global_kb)
    kbs = [global_kb if global_kb is not None else d.kb for d, _, _ in turns]
    contexts = [d.context(t) for d, t, _ in turns]
    replies: list[Reply] = []
    step = pipeline.config.batch_size
    with tqdm(total=len(turns), desc=f"{split.dataset} {split.split}", unit="turn") as bar:
        for start in range(0, len(turns), step):
            try:
                replies.extend(
                    pipeline.respond_many(contexts[start : start + step], kbs[start : start + step])
                )
            except GeneratorUnavailable as exc:
                # The generator names the turn by its place in the batch; add where the batch is.
                batch = turns[start : start + step]
                where = ", ".join(f"{d.id} turn {t + 1}" for d, t, _ in batch)
                raise GeneratorUnavailable(
                    f"{split.dataset} {split.split}, turns {start + 1}-{start + len(batch)} of this run "
                    f"({where}): {exc}"
                ) from exc
            bar.update(min(step, len(turns) - start))
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = out_dir / "predictions.txt"
    # Generated text is one line per turn by construction of the file format.
    write_predictions(predictions_path, [" ".join(r.text.split()) for r in replies])
    records_path = out_dir / "records.jsonl"
    with records_path.open("w", encoding="utf-8") as fh:
        for (dialogue, t, turn), reply in zip(turns, replies, strict=True):
            row = {
                "dialogue": dialogue.id,
                "turn": t,
                "user": turn.user,
                "reference": turn.response,
                "prediction": reply.text,
                "gold_entities": list(turn.gold_entities),
                "records": [_record_json(r) for r in reply.records],
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    refs = [turn.response for _, _, turn in turns]
    responses = evaluate_responses(split.dataset, read_predictions(predictions_path), refs, vocab)
    retrieval = recall_at_k(
        [[r.record for r in reply.records] for reply in replies],
        [turn.gold_entities for _, _, turn in turns],
        kbs,
        ks=ks,
    )
    return PipelineEvaluation(responses, retrieval, len(turns), predictions_path, records_path)
