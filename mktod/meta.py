"""Meta knowledge for retrieved records (METHOD.md §4): tagging and rendering, as pure functions.

Each retrieved record gets three tags:

- **order**: its retrieval rank, ``<1th-entity>`` … ``<5th-entity>``, ``<other-entity>`` beyond rank 5;
- **confidence**: a normalised retrieval score bucketed by two thresholds (default: q_i, the softmax of
  the scores over the retrieved set; ``<high-confidence>`` ≥ 0.75, ``<mid-confidence>`` ≥ 0.25,
  ``<low-confidence>`` below);
- **co-occurrence**: ``<old-entity>`` if the record already appeared in the dialogue context, else
  ``<new-entity>``.

"Appeared in the context" is not defined by the paper. Here a record appeared when its *name* or one of
its *distinctive values* occurs in the context as a whole-word phrase (case, ``_`` and punctuation
ignored). A value is distinctive when

1. its attribute is *identifying* in the reference set (the retrieved records, or the KB if the caller
   passes it): at least ``identifying_ratio`` (0.8) of the records that have the attribute hold distinct
   values for it — name, address, phone and postcode pass; area, food, price range and stars do not,
   since many records share them and a user asking for "the centre" has not mentioned any one entity;
2. no other record of the reference set holds the same value;
3. it is not a generic word (``yes``, ``free``, ``none``, ``?``, …) and has at least ``min_value_chars``
   characters, so that e.g. ``stars 4`` never matches "4 people".

``cooccurrence="name"`` restricts the test to the name alone.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mktod.kb import linearise, value_text
from mktod.types import Hit, Record, Utterance

# The tagged-record types live in mktod.types (a Reply carries them); re-exported for callers here.
from mktod.types import MetaTags as MetaTags
from mktod.types import TaggedRecord as TaggedRecord

MetaMode = Literal["prefix", "prompt", "none"]
ScoreType = Literal["softmax", "raw", "sigmoid"]
CooccurrenceTest = Literal["identifying", "name"]

ORDER_TAGS = ("<1th-entity>", "<2th-entity>", "<3th-entity>", "<4th-entity>", "<5th-entity>")
OTHER_ENTITY = "<other-entity>"
HIGH_CONFIDENCE = "<high-confidence>"
MID_CONFIDENCE = "<mid-confidence>"
LOW_CONFIDENCE = "<low-confidence>"
OLD_ENTITY = "<old-entity>"
NEW_ENTITY = "<new-entity>"
CONFIDENCE_TAGS = (HIGH_CONFIDENCE, MID_CONFIDENCE, LOW_CONFIDENCE)
COOCCURRENCE_TAGS = (OLD_ENTITY, NEW_ENTITY)

# The tokens the generator's tokenizer must know in prefix mode (added as new, unsplittable tokens).
SPECIAL_TOKENS: tuple[str, ...] = (
    *ORDER_TAGS,
    OTHER_ENTITY,
    HIGH_CONFIDENCE,
    MID_CONFIDENCE,
    LOW_CONFIDENCE,
    OLD_ENTITY,
    NEW_ENTITY,
)

# Fields that name a record, in the order kb.linearise puts first (MWOZ/CamRest, SMD poi/calendar/weather).
NAME_FIELDS = ("name", "poi", "event", "location")

# Values too common in ordinary speech to show that an entity was mentioned.
GENERIC_VALUES = frozenset(
    {"yes", "no", "none", "free", "dontcare", "dont care", "not mentioned", "unknown", "?", "-", "n/a", "na"}
)

_CONFIDENCE_PHRASE = {HIGH_CONFIDENCE: "high", MID_CONFIDENCE: "middle", LOW_CONFIDENCE: "low"}
_LLM_POSSIBILITY = {HIGH_CONFIDENCE: "high", MID_CONFIDENCE: "medium", LOW_CONFIDENCE: "low"}

# For a chat LLM's system prompt: what the sentences after each entity mean (METHOD.md §4).
LLM_TAG_EXPLANATION = (
    "Each knowledge-base entity below is followed by two sentences of meta knowledge. "
    '"It has high/medium/low possibility that this entity is top-n important." says how likely the '
    "retriever thinks the entity is the one the user needs and where it ranked it; "
    '"this entity is not important" marks entities ranked below the top 5. '
    '"This entity has appeared before." means it was already mentioned in the dialogue; '
    '"This is a new entity." means it was not.'
)


@dataclass(frozen=True)
class MetaConfig:
    """How meta knowledge is computed and shown to the generator."""

    mode: MetaMode = "prefix"
    score_type: ScoreType = "softmax"
    thresholds: tuple[float, float] = (0.25, 0.75)
    temperature: float = 1.0
    use_negative: bool = True
    cooccurrence: CooccurrenceTest = "identifying"
    identifying_ratio: float = 0.8
    min_value_chars: int = 4

    def __post_init__(self) -> None:
        low, high = self.thresholds
        if not low <= high:
            raise ValueError(f"thresholds must be (low, high) with low <= high, got {self.thresholds}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def tag(
        self,
        hits: Sequence[Hit],
        context: Sequence[Utterance] | str,
        reference: Sequence[Record] | None = None,
    ) -> tuple[TaggedRecord, ...]:
        return tag_hits(
            hits,
            context,
            score_type=self.score_type,
            thresholds=self.thresholds,
            temperature=self.temperature,
            cooccurrence=self.cooccurrence,
            reference=reference,
            identifying_ratio=self.identifying_ratio,
            min_value_chars=self.min_value_chars,
        )

    def render(self, tagged: TaggedRecord) -> str:
        return render(tagged, self.mode)


# --------------------------------------------------------------------------------------------- tagging


def order_tag(rank: int) -> str:
    if rank < 1:
        raise ValueError(f"ranks are 1-based, got {rank}")
    return ORDER_TAGS[rank - 1] if rank <= len(ORDER_TAGS) else OTHER_ENTITY


def tagged_as(
    record: Record, rank: int, confidence: str, cooccurrence: str, negative: bool = False
) -> TaggedRecord:
    """``record`` under the given tags, with no retrieval behind them: for measuring a rendering's
    length (mktod.record_budget) or teaching a tokenizer its phrases (mktod.generators.backbones)."""
    order = OTHER_ENTITY if negative else order_tag(rank)
    return TaggedRecord(record, MetaTags(order, confidence, cooccurrence), rank, 0.0, 0.0, negative)


def confidence_tag(confidence: float, thresholds: tuple[float, float] = (0.25, 0.75)) -> str:
    low, high = thresholds
    if confidence >= high:
        return HIGH_CONFIDENCE
    if confidence >= low:
        return MID_CONFIDENCE
    return LOW_CONFIDENCE


def normalise_scores(
    scores: Sequence[float], score_type: ScoreType = "softmax", temperature: float = 1.0
) -> tuple[float, ...]:
    """Map raw retrieval scores to [0, 1]-ish confidences: softmax over the set, sigmoid, or as is."""
    if score_type == "raw":
        return tuple(float(s) for s in scores)
    if score_type == "sigmoid":
        return tuple(1.0 / (1.0 + math.exp(-s / temperature)) for s in scores)
    if score_type == "softmax":
        if not scores:
            return ()
        scaled = [s / temperature for s in scores]
        top = max(scaled)  # shift for stability: exp of large dot products overflows
        exps = [math.exp(s - top) for s in scaled]
        total = sum(exps)
        return tuple(e / total for e in exps)
    raise ValueError(f"unknown score_type {score_type!r}; use softmax, raw or sigmoid")


_NON_WORD = re.compile(r"[^0-9a-z]+")


def _norm(text: str) -> str:
    # Spaces at both ends so that `f" {value} " in text` is a whole-word phrase match.
    return " " + " ".join(_NON_WORD.sub(" ", value_text(text)).split()) + " "


def context_text(context: Sequence[Utterance] | str) -> str:
    if isinstance(context, str):
        return context
    return " ".join(u.text for u in context)


def record_name(record: Record) -> str | None:
    for key in NAME_FIELDS:
        if key in record.fields:
            return record.fields[key]
    return None


def identifying_fields(reference: Sequence[Record], ratio: float = 0.8) -> frozenset[str]:
    """Attributes whose values are (mostly) distinct across ``reference``: name, address, phone, …"""
    values: dict[str, list[str]] = {}
    for record in reference:
        for key, value in record.fields.items():
            values.setdefault(key, []).append(_norm(value))
    return frozenset(
        key for key, vals in values.items() if len(vals) >= 2 and len(set(vals)) / len(vals) >= ratio
    )


@dataclass(frozen=True)
class _Reference:
    """What distinctiveness is judged against, computed once per turn rather than once per record."""

    fields: frozenset[str]
    counts: Counter[str]
    min_value_chars: int

    @classmethod
    def of(cls, reference: Sequence[Record], ratio: float, min_value_chars: int) -> _Reference:
        counts = Counter(_norm(v) for r in reference for v in r.fields.values())
        return cls(identifying_fields(reference, ratio), counts, min_value_chars)

    def distinctive(self, record: Record) -> tuple[str, ...]:
        out = []
        for key, value in record.fields.items():
            norm = _norm(value).strip()
            if key not in self.fields or self.counts[f" {norm} "] > 1:
                continue
            if norm in GENERIC_VALUES or len(norm) < self.min_value_chars:
                continue
            out.append(value)
        return tuple(out)

    def appeared(self, record: Record, norm_context: str, cooccurrence: CooccurrenceTest) -> bool:
        name = record_name(record)
        candidates = [name] if name is not None else []
        if cooccurrence == "identifying":
            candidates += self.distinctive(record)
        elif cooccurrence != "name":
            raise ValueError(f"unknown cooccurrence test {cooccurrence!r}; use identifying or name")
        phrases = (_norm(c) for c in candidates)
        return any(p.strip() != "" and p in norm_context for p in phrases)


def distinctive_values(
    record: Record,
    reference: Sequence[Record],
    identifying_ratio: float = 0.8,
    min_value_chars: int = 4,
) -> tuple[str, ...]:
    """The record's values that single it out in ``reference`` (see the module docstring)."""
    return _Reference.of(reference, identifying_ratio, min_value_chars).distinctive(record)


def appeared_in(
    record: Record,
    context: Sequence[Utterance] | str,
    reference: Sequence[Record] = (),
    cooccurrence: CooccurrenceTest = "identifying",
    identifying_ratio: float = 0.8,
    min_value_chars: int = 4,
) -> bool:
    """The co-occurrence test: the record's name or a distinctive value occurs in the context."""
    ref = _Reference.of(reference or (record,), identifying_ratio, min_value_chars)
    return ref.appeared(record, _norm(context_text(context)), cooccurrence)


def tag_hits(
    hits: Sequence[Hit],
    context: Sequence[Utterance] | str,
    score_type: ScoreType = "softmax",
    thresholds: tuple[float, float] = (0.25, 0.75),
    temperature: float = 1.0,
    cooccurrence: CooccurrenceTest = "identifying",
    reference: Sequence[Record] | None = None,
    identifying_ratio: float = 0.8,
    min_value_chars: int = 4,
) -> tuple[TaggedRecord, ...]:
    """Tag each hit (order from ``hit.rank``, confidence over the given set, co-occurrence in context).

    ``reference`` is the record set in which values must be distinctive; default: the hits' records.
    Passing the whole KB makes "distinctive" stricter and independent of what was retrieved.
    """
    confidences = normalise_scores([h.score for h in hits], score_type, temperature)
    records = tuple(reference) if reference is not None else tuple(h.record for h in hits)
    ref = _Reference.of(records, identifying_ratio, min_value_chars)
    text = _norm(context_text(context))
    out = []
    for hit, conf in zip(hits, confidences, strict=True):
        tags = MetaTags(
            order=order_tag(hit.rank),
            confidence=confidence_tag(conf, thresholds),
            cooccurrence=OLD_ENTITY if ref.appeared(hit.record, text, cooccurrence) else NEW_ENTITY,
        )
        out.append(TaggedRecord(hit.record, tags, hit.rank, hit.score, conf))
    return tuple(out)


NEGATIVE_TAGS = MetaTags(order=OTHER_ENTITY, confidence=LOW_CONFIDENCE, cooccurrence=NEW_ENTITY)


def negative_record(
    kb: Sequence[Record], scores: Sequence[float], exclude: Sequence[Record] = ()
) -> TaggedRecord:
    """The easy negative (training only): the lowest-scored KB record not in ``exclude``.

    ``scores[i]`` is the retrieval score of ``kb[i]``; ties go to the earlier record. Always tagged
    ``<other-entity> <low-confidence> <new-entity>`` whatever its real rank or context.
    """
    if len(kb) != len(scores):
        raise ValueError(f"{len(kb)} records but {len(scores)} scores")
    excluded = set(exclude)
    candidates = [i for i, r in enumerate(kb) if r not in excluded]
    if not candidates:
        raise ValueError("no record left for the negative: every KB record is excluded (retrieved)")
    worst = min(candidates, key=lambda i: (scores[i], i))
    rank = 1 + sum(1 for s in scores if s > scores[worst])
    return TaggedRecord(kb[worst], NEGATIVE_TAGS, rank, float(scores[worst]), 0.0, negative=True)


# ------------------------------------------------------------------------------------------- rendering


def render_none(tagged: TaggedRecord) -> str:
    return linearise(tagged.record)


def render_prefix(tagged: TaggedRecord) -> str:
    t = tagged.tags
    return f"{t.cooccurrence} {t.confidence} {t.order} {linearise(tagged.record)}"


def _is_top(tagged: TaggedRecord) -> bool:
    return not tagged.negative and tagged.tags.order != OTHER_ENTITY


def render_prompt(tagged: TaggedRecord) -> str:
    """Natural-language tags, in reading order: rank, confidence, co-occurrence, then the record.

    e.g. ``The top-2 recalled: with middle confidence: newly recalled: name ...``.
    """
    t = tagged.tags
    order = f"The top-{tagged.rank} recalled:" if _is_top(tagged) else "The negative entity recalled:"
    confidence = f"with {_CONFIDENCE_PHRASE[t.confidence]} confidence:"
    seen = "existed in history:" if t.cooccurrence == OLD_ENTITY else "newly recalled:"
    return f"{order} {confidence} {seen} {linearise(tagged.record)}"


def render_llm_sentences(tagged: TaggedRecord) -> str:
    """The record followed by the chat-LLM meta sentences, e.g.

    ``name x ; area centre. It has high possibility that this entity is top-1 important. This is a new
    entity.``
    """
    t = tagged.tags
    possibility = _LLM_POSSIBILITY[t.confidence]
    what = f"top-{tagged.rank} important" if _is_top(tagged) else "not important"
    seen = "This entity has appeared before." if t.cooccurrence == OLD_ENTITY else "This is a new entity."
    return f"{linearise(tagged.record)}. It has {possibility} possibility that this entity is {what}. {seen}"


RENDERERS: dict[str, Callable[[TaggedRecord], str]] = {
    "prefix": render_prefix,
    "prompt": render_prompt,
    "none": render_none,
}


def render(tagged: TaggedRecord, mode: MetaMode = "prefix") -> str:
    renderer = RENDERERS.get(mode)
    if renderer is None:
        raise ValueError(f"unknown meta mode {mode!r}; use one of {', '.join(RENDERERS)}")
    return renderer(tagged)
