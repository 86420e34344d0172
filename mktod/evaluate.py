"""Offline evaluation: score a predictions file (one response per system turn) against a split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mktod.datasets import DataPaths, get_loader
from mktod.errors import DataError
from mktod.metrics import EntityVocab, ResponseScores, evaluate_responses
from mktod.types import Split


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
    split: Split, predictions: Sequence[str], vocab: EntityVocab, source: str = "predictions"
) -> ResponseScores:
    refs = references(split)
    if len(predictions) != len(refs):
        raise DataError(
            source,
            f"has {len(predictions)} predictions but {split.dataset} {split.split} has {len(refs)} "
            "system turns; write one response per line, in the canonical order of the split",
        )
    return evaluate_responses(split.dataset, predictions, refs, vocab)


def evaluate_file(dataset: str, split_name: str, predictions_path: Path, paths: DataPaths) -> ResponseScores:
    loader = get_loader(dataset)
    split = loader.load_split(split_name, paths)
    vocab = EntityVocab.from_file(dataset, loader.entity_file(paths))
    return score_predictions(split, read_predictions(predictions_path), vocab, source=str(predictions_path))
