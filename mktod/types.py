"""Core data types shared by every stage: dialogue -> retriever -> meta knowledge -> generator -> reply.

All are frozen dataclasses so they can be hashed, cached and passed between threads safely.
Values are stored in the dataset's raw form (lower-case, multi-word values joined with ``_``);
normalisation for metrics happens in :mod:`mktod.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Speaker = Literal["user", "system"]


@dataclass(frozen=True)
class Utterance:
    speaker: Speaker
    text: str


@dataclass(frozen=True)
class Record:
    """One KB entity (a row): attribute -> value, in the dataset's raw value form."""

    id: str
    fields: Mapping[str, str]
    domain: str = ""

    def __post_init__(self) -> None:
        # Freeze the mapping so a Record is truly immutable and hashable by identity of its contents.
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def __hash__(self) -> int:
        return hash((self.id, self.domain, tuple(self.fields.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.id, self.domain, dict(self.fields)) == (other.id, other.domain, dict(other.fields))

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self.fields.values())


@dataclass(frozen=True)
class KB:
    """An ordered collection of records (a dialogue's condensed KB or a dataset-level KB)."""

    records: tuple[Record, ...]
    name: str = ""

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def by_id(self, record_id: str) -> Record:
        for record in self.records:
            if record.id == record_id:
                return record
        raise KeyError(f"record {record_id!r} not in KB {self.name!r}")


@dataclass(frozen=True)
class Turn:
    """One exchange: the user's utterance and the system response that answers it."""

    user: str
    response: str
    gold_entities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dialogue:
    id: str
    domain: str
    turns: tuple[Turn, ...]
    kb: KB = field(default_factory=lambda: KB(()))

    def context(self, t: int) -> tuple[Utterance, ...]:
        """Context c_t = u_1, r_1, ..., u_t for the t-th turn (0-based), most recent last."""
        if not 0 <= t < len(self.turns):
            raise IndexError(f"dialogue {self.id} has {len(self.turns)} turns, asked for turn {t}")
        out: list[Utterance] = []
        for turn in self.turns[:t]:
            out.append(Utterance("user", turn.user))
            out.append(Utterance("system", turn.response))
        out.append(Utterance("user", self.turns[t].user))
        return tuple(out)


@dataclass(frozen=True)
class Split:
    """One split of one dataset, plus what is needed to score it."""

    dataset: str
    split: str
    dialogues: tuple[Dialogue, ...]

    @property
    def num_turns(self) -> int:
        return sum(len(d.turns) for d in self.dialogues)

    def iter_turns(self) -> Iterator[tuple[Dialogue, int, Turn]]:
        """System turns in canonical file order (the order of a predictions file)."""
        for dialogue in self.dialogues:
            for t, turn in enumerate(dialogue.turns):
                yield dialogue, t, turn


@dataclass(frozen=True)
class Hit:
    """A retrieved record with its retrieval score and 1-based rank."""

    record: Record
    score: float
    rank: int


@dataclass(frozen=True)
class MetaTags:
    """Meta knowledge of one retrieved record (METHOD.md §4), as the generator's special tokens."""

    order: str
    confidence: str
    cooccurrence: str


@dataclass(frozen=True)
class TaggedRecord:
    """A record with its meta knowledge; ``confidence`` is the normalised score the bucket came from."""

    record: Record
    tags: MetaTags
    rank: int
    score: float
    confidence: float
    negative: bool = False


@dataclass(frozen=True)
class Reply:
    """A system response and the records it was generated from, with their meta knowledge."""

    text: str
    records: tuple[TaggedRecord, ...] = ()
