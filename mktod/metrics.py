"""Response and retrieval metrics, compatible with the Q-TOD / MAKER / MK-TOD evaluation.

The definitions follow ``EVALUATION.md`` (the spec); where it is silent we follow Q-TOD's original
``evaluate.py`` (Knover, ``projects/Q-TOD``). Everything here is a pure function of its arguments except
:meth:`EntityVocab.from_file`, the one place that reads a file.

All scores are on the 0-100 scale.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import sacrebleu

from mktod.errors import DataError
from mktod.types import KB, Record

DATASETS = ("smd", "camrest", "mwoz")

_CHOICE = "choice-"
# Words Q-TOD adds to the SMD vocabulary because the KVRET entity list misses them. " lab " and " hr "
# keep their spaces so they only match whole words ("hr" alone would match inside "three", "hrs").
_SMD_EXTRA = (
    "yoga", "tennis", "swimming", "football", " lab ", "doctor", "optometrist", "dentist",
    "1st", "2nd", "3rd", *(f"{n}th" for n in range(4, 21)),
    "jill", "jack", " hr ",
)  # fmt: skip
_TEMPERATURES = range(20, 101, 10)
_MANY_EXCLUDED = re.compile(r"(many (other types|food types|cuisines)|how many)")
_ALL_PATTERN = re.compile(r"all (of the|expensive|moderate|cheap)")
_FREE_PATTERN = re.compile(r"free (parking|internet|wifi)")
_CHOICE_LEAD = r"(there are|there is|found|have about|have)( only|) "
_TOWNINFO = "cambridge towninfo centre"


# --------------------------------------------------------------------------------------------- text


def normalize(text: str) -> str:
    """Lower-case and turn the dataset's ``_`` joins into spaces (applied to responses and values)."""
    return text.lower().replace("_", " ")


def split_punctuation(text: str) -> str:
    """Surround every ASCII punctuation character with spaces and collapse whitespace (MWOZ predictions).

    This is the form (most) MWOZ references are written in ("there are 3 . would you like ?").
    """
    for p in string.punctuation:
        text = text.replace(p, f" {p} ")
    return " ".join(text.split())


def _check_dataset(dataset: str) -> str:
    name = dataset.lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return name


# --------------------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class EntityVocab:
    """The normalised entity vocabulary of one dataset, in matching order (longest first).

    For MWOZ, values of the ``choice`` slot are stored as ``choice-<value>``; their position in the
    order is decided by that prefixed length, as in Q-TOD, so ``choice-all`` (10 characters) is tried
    before ``centre`` (6). Ties in length are broken alphabetically so extraction is deterministic:
    Q-TOD iterates a Python set there, whose order changes from run to run, and on MWOZ the tie matters
    ("free" must be tried before "park", or blanking "park" spoils "free parking").
    """

    dataset: str
    values: tuple[str, ...]

    @classmethod
    def build(cls, dataset: str, raw: Mapping[str, Any]) -> EntityVocab:
        """Vocabulary from a parsed entity list (``slot -> [values]``); ValueError if malformed."""
        name = _check_dataset(dataset)
        found: set[str] = set()
        for slot, values in raw.items():
            if not isinstance(values, list):
                raise ValueError(f"slot {slot!r} should hold a list of values, not {type(values).__name__}")
            for i, value in enumerate(values):
                if name == "smd" and slot == "poi":
                    # A point of interest is an object; its name, address and type are all entities.
                    if not isinstance(value, Mapping) or not all(
                        isinstance(value.get(k), str) for k in ("poi", "address", "type")
                    ):
                        raise ValueError(
                            f"poi entry {i} should be an object with poi, address and type strings"
                        )
                    found.update(value[k] for k in ("poi", "address", "type"))
                elif not isinstance(value, str):
                    raise ValueError(
                        f"slot {slot!r} value {i} should be a string, not {type(value).__name__}"
                    )
                elif name == "mwoz" and slot == "choice":
                    found.add(_CHOICE + value)
                else:
                    found.add(value)
        vocab = {normalize(v) for v in found}
        if name == "smd":
            vocab.update(_SMD_EXTRA)
            # "HR" (a party) normalises to "hr", which is replaced by the space-delimited " hr " above.
            vocab.discard("hr")
        # A blank value would match every response (the lists hold none; this guards edited copies).
        vocab = {v for v in vocab if v.removeprefix(_CHOICE).strip()}
        return cls(name, tuple(sorted(vocab, key=lambda v: (-len(v), v))))

    @classmethod
    def from_file(cls, dataset: str, path: Path) -> EntityVocab:
        """Read a global entity list; DataError naming the file if it is missing or malformed.

        The files: ``kvret_entities.json`` (SMD), ``camrest_entities.json``, ``global_entities.json`` (MWOZ).
        """
        _check_dataset(dataset)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(path, "entity list not found; check the data directory") from None
        except OSError as exc:
            raise DataError(path, f"cannot read the entity list: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(path, f"entity list is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise DataError(path, "entity list should be a JSON object mapping slot -> list of values")
        try:
            return cls.build(dataset, raw)
        except ValueError as exc:
            raise DataError(path, f"malformed entity list: {exc}") from None


# --------------------------------------------------------------------------------------- extraction


def _smd_rewrite(text: str) -> str:
    # KVRET entities are "7pm" and "20f"; responses say "7 pm" and "20-30f".
    for h in range(13):
        text = text.replace(f"{h} am", f"{h}am").replace(f"{h} pm", f"{h}pm")
    for low in _TEMPERATURES:
        for high in _TEMPERATURES:
            text = text.replace(f"{low}-{high}f", f"{low}f-{high}f")
    return text


def _mwoz_match(value: str, text: str) -> str | None:
    """The entity ``value`` yields in ``text`` under the MWOZ rules, or None."""
    if value.startswith(_CHOICE):
        choice = value[len(_CHOICE) :]
        if choice == "many":
            hit = choice in _MANY_EXCLUDED.sub(" ", text)
        elif choice == "all":
            hit = _ALL_PATTERN.search(text) is not None
        elif choice == "to":
            hit = False
        else:
            hit = re.search(_CHOICE_LEAD + re.escape(choice), text) is not None
        return choice if hit else None
    if value == "centre":
        return value if value in text.replace(_TOWNINFO, " ") else None
    if value == "free":
        return value if _FREE_PATTERN.search(text) else None
    return value if value in text else None


def extract_entities(text: str, vocab: EntityVocab) -> list[str]:
    """Entities mentioned in ``text``, in vocabulary order (longest first), each at most once.

    The text is normalised here (idempotent); MWOZ punctuation splitting is the caller's business,
    since it applies to predictions only. Returned values are normalised, ``choice-`` stripped.
    """
    text = f" {normalize(text)} "
    found: list[str] = []
    if vocab.dataset == "mwoz":
        for value in vocab.values:
            entity = _mwoz_match(value, text)
            if entity is not None:
                found.append(entity)
                # Blank every occurrence so a shorter value cannot match inside it again.
                text = text.replace(entity, " ")
        return found
    if vocab.dataset == "smd":
        text = _smd_rewrite(text)
    for value in vocab.values:
        if value in text and not any(value in taken for taken in found):
            found.append(value)
    return found


# ------------------------------------------------------------------------------------------ scoring


class EntityCounts(NamedTuple):
    tp: int
    fp: int
    fn: int


def entity_counts(pred_entities: Sequence[str], ref_entities: Sequence[str]) -> EntityCounts:
    """TP/FP/FN of one turn; all zero when the reference has no entity (the turn is not scored).

    Each element of the reference list is a TP or an FN, so a duplicated reference entity would count
    twice (as in Q-TOD; extraction never yields duplicates). FPs are over distinct predicted entities.
    """
    if not ref_entities:
        return EntityCounts(0, 0, 0)
    pred = set(pred_entities)
    ref = set(ref_entities)
    tp = sum(1 for g in ref_entities if g in pred)
    return EntityCounts(tp, len(pred - ref), len(ref_entities) - tp)


def f1_precision_recall(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Micro F1, precision and recall (0-100) from summed counts; 0 where undefined."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 100 * f1, 100 * precision, 100 * recall


@dataclass(frozen=True)
class EntityScores:
    """Micro-averaged entity scores (0-100) over the turns whose reference has an entity."""

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    turns_scored: int


def entity_f1(pred_entities: Sequence[Sequence[str]], ref_entities: Sequence[Sequence[str]]) -> EntityScores:
    """Micro entity F1 from per-turn entity lists (``[turns][entities]``), summing TP/FP/FN first."""
    _check_lengths(pred_entities, ref_entities)
    tp = fp = fn = 0
    for pred, ref in zip(pred_entities, ref_entities, strict=True):
        counts = entity_counts(pred, ref)
        tp, fp, fn = tp + counts.tp, fp + counts.fp, fn + counts.fn
    f1, precision, recall = f1_precision_recall(tp, fp, fn)
    return EntityScores(f1, precision, recall, tp, fp, fn, sum(1 for ref in ref_entities if ref))


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU-4 (sacrebleu, 13a tokenizer, one reference per turn) on normalised text, 0-100.

    MWOZ predictions must already be punctuation-split (:func:`evaluate_responses` does it).
    """
    _check_lengths(preds, refs)
    # force=True only silences sacrebleu's "looks tokenized" warning (MWOZ is); the score is unchanged.
    result = sacrebleu.corpus_bleu(
        [normalize(p) for p in preds], [[normalize(r) for r in refs]], tokenize="13a", force=True
    )
    return float(result.score)


@dataclass(frozen=True)
class ResponseScores:
    """BLEU and entity scores of one split's responses, 0-100."""

    bleu: float
    entity_f1: float
    entity_precision: float
    entity_recall: float
    turns: int
    turns_scored: int
    tp: int
    fp: int
    fn: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "bleu": self.bleu,
            "entity_f1": self.entity_f1,
            "entity_precision": self.entity_precision,
            "entity_recall": self.entity_recall,
            "turns": self.turns,
            "turns_scored": self.turns_scored,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


def evaluate_responses(
    dataset: str, preds: Sequence[str], refs: Sequence[str], vocab: EntityVocab
) -> ResponseScores:
    """Score predicted responses against references (raw dataset form, one per system turn, same order).

    For MWOZ, predictions are punctuation-split before BLEU and entity extraction (EVALUATION.md),
    "as the references already are". 37 of the 711 test references (32 of 576 dev) are not in split
    form ("53-57_lensfield_road", "13:00", "b&b"), so the references are split the same way: a no-op
    on the others, and what makes a reference score 100 against itself. (Q-TOD's script splits only
    the predictions; the two differ on those 37 turns alone.)
    """
    return score_turns(dataset, preds, refs, vocab)[0]


def score_turns(
    dataset: str, preds: Sequence[str], refs: Sequence[str], vocab: EntityVocab
) -> tuple[ResponseScores, list[EntityCounts]]:
    """:func:`evaluate_responses`' scores and, from the same entity extraction, each turn's entity
    TP/FP/FN (their sums are the scores' ``tp``/``fp``/``fn``): what a per-turn analysis such as a
    bootstrap over dialogues resamples."""
    name = _check_dataset(dataset)
    if vocab.dataset != name:
        raise ValueError(f"entity vocabulary is for {vocab.dataset}, not {name}")
    _check_lengths(preds, refs)
    if name == "mwoz":
        preds = [split_punctuation(normalize(p)) for p in preds]
        refs = [split_punctuation(normalize(r)) for r in refs]
    pred_entities = [extract_entities(p, vocab) for p in preds]
    ref_entities = [extract_entities(r, vocab) for r in refs]
    entities = entity_f1(pred_entities, ref_entities)
    scores = ResponseScores(
        bleu=bleu(preds, refs),
        entity_f1=entities.f1,
        entity_precision=entities.precision,
        entity_recall=entities.recall,
        turns=len(refs),
        turns_scored=entities.turns_scored,
        tp=entities.tp,
        fp=entities.fp,
        fn=entities.fn,
    )
    return scores, [entity_counts(p, r) for p, r in zip(pred_entities, ref_entities, strict=True)]


def _check_lengths(preds: Sequence[object], refs: Sequence[object]) -> None:
    if len(preds) != len(refs):
        raise ValueError(
            f"{len(preds)} predictions but {len(refs)} references; need one prediction per reference turn"
        )
    if not refs:
        raise ValueError("nothing to score: 0 predictions and 0 references")


# ---------------------------------------------------------------------------------------- retrieval


@dataclass(frozen=True)
class RecallScores:
    """Retrieval Recall@K (0-100) over (turn, gold KB entity) pairs.

    ``recall[k]``: share of pairs whose entity is a value of one of the top-k records.
    ``all_covered[k]``: share of turns (with at least one gold KB entity) whose gold KB entities all are.
    """

    recall: Mapping[int, float]
    all_covered: Mapping[int, float]
    pairs: int
    turns: int


def recall_at_k(
    retrieved: Sequence[Sequence[Record]],
    gold: Sequence[Sequence[str]],
    kbs: Sequence[KB | Set[str]],
    ks: Sequence[int] = (1, 3, 5, 7),
) -> RecallScores:
    """Recall@K of ranked retrieval results against each turn's gold entities.

    Shapes, one entry per turn: ``retrieved[t]`` the records best first (any length; fewer than k
    records means the top-k is all of them); ``gold[t]`` the turn's gold entities; ``kbs[t]`` the KB the
    turn retrieves from (the dialogue's condensed KB or the dataset-level one), or directly the set of
    its values. A gold entity counts only if it is a value of that KB (others, e.g. a booking reference,
    cannot be retrieved); a turn's repeated gold entity counts once. Values compare after
    :func:`normalize`, so raw (``_``-joined) and spaced forms match.
    """
    if not len(retrieved) == len(gold) == len(kbs):
        raise ValueError(
            f"need one entry per turn: {len(retrieved)} retrieved, {len(gold)} gold, {len(kbs)} KBs"
        )
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    kb_cache: dict[int, frozenset[str]] = {}  # the large-scale KB is shared by every turn
    hits = dict.fromkeys(ks, 0)
    covered = dict.fromkeys(ks, 0)
    pairs = turns = 0
    for records, entities, kb in zip(retrieved, gold, kbs, strict=True):
        if id(kb) not in kb_cache:
            kb_cache[id(kb)] = _kb_values(kb)
        kb_values = kb_cache[id(kb)]
        targets = [e for e in dict.fromkeys(normalize(e) for e in entities) if e in kb_values]
        if not targets:
            continue
        turns += 1
        pairs += len(targets)
        for k in ks:
            top = {normalize(v) for record in records[:k] for v in record.values}
            found = sum(1 for e in targets if e in top)
            hits[k] += found
            covered[k] += found == len(targets)
    return RecallScores(
        recall=MappingProxyType({k: 100 * hits[k] / pairs if pairs else 0.0 for k in ks}),
        all_covered=MappingProxyType({k: 100 * covered[k] / turns if turns else 0.0 for k in ks}),
        pairs=pairs,
        turns=turns,
    )


def _kb_values(kb: KB | Set[str]) -> frozenset[str]:
    if isinstance(kb, KB):
        return frozenset(normalize(v) for record in kb for v in record.values)
    return frozenset(normalize(v) for v in kb)
