"""How a record budget (``generator.max_record_tokens``) treats a dataset's records, before training.

Both trainable generators cut each rendered record (meta knowledge, then the fields, name first) at
``max_record_tokens``; what is cut never reaches the generator, so a value it holds can never be copied
into a reply. Training warns once it has cut (mktod.generators.base.RecordCuts); this measures the whole
split up front through the generator's own rendering and tokenizer, with the longest tags the mode
can give a record, and says which fields survive:

    mktod record-budget --config configs/camrest-condensed-prompt-smollm2-cpu.yaml
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from mktod.kb import field_order, value_text
from mktod.meta import CONFIDENCE_TAGS, COOCCURRENCE_TAGS, TaggedRecord, tagged_as
from mktod.types import KB, Record, Split

RecordTokens = Callable[[TaggedRecord], list[int]]  # a generator's record_tokens


def tag_variants(record: Record, k: int) -> list[TaggedRecord]:
    """``record`` under every tagging it can get at ``k`` records a turn: ranks 1..k and the easy
    negative, each confidence bucket, seen before or new."""
    ranks = [(rank, False) for rank in range(1, k + 1)] + [(k + 1, True)]  # then the negative
    return [
        tagged_as(record, rank, confidence, seen, negative)
        for (rank, negative), confidence, seen in itertools.product(ranks, CONFIDENCE_TAGS, COOCCURRENCE_TAGS)
    ]


def longest_tagging(record: Record, k: int, tokens: RecordTokens) -> TaggedRecord:
    """The tagging of ``record`` that renders to the most tokens."""
    return max(tag_variants(record, k), key=lambda tagged: len(tokens(tagged)))


def shown_fields(tagged: TaggedRecord, tokens: RecordTokens, cap: int) -> tuple[int, list[str]]:
    """Tokens of ``tagged`` rendered whole, and the fields whose value fits in ``cap`` tokens: field j
    is shown when the record cut after it (meta knowledge, fields 1..j) is at most ``cap`` tokens."""
    record = tagged.record
    keys = field_order(record)
    whole = len(tokens(tagged))
    if whole <= cap:
        return whole, keys  # nothing is cut: no need to render it field by field
    shown = []
    for j, key in enumerate(keys, start=1):
        head = Record(record.id, {k: record.fields[k] for k in keys[:j]}, record.domain)
        if len(tokens(replace(tagged, record=head))) > cap:
            break  # fields come out in order: once one is cut, every later one is too
        shown.append(key)
    return whole, shown


@dataclass(frozen=True)
class FieldShare:
    field: str
    records: int  # records (counted as the split presents them) that hold the field
    shown: int  # of those, the records in which its value fits in the budget

    @property
    def percent(self) -> float:
        return 100.0 * self.shown / self.records if self.records else 0.0


@dataclass(frozen=True)
class BudgetReport:
    cap: int
    records: int  # records measured, each time a turn's KB presents it
    unique: int  # distinct records among them
    lengths: tuple[int, ...]  # tokens of each measured record rendered whole, sorted
    fields: tuple[FieldShare, ...]  # in the order the records first present them

    @property
    def cut(self) -> int:
        return sum(1 for n in self.lengths if n > self.cap)

    def percentile(self, q: float) -> int:
        """The nearest-rank ``q``-th percentile of the rendered lengths."""
        if not self.lengths:
            return 0
        rank = max(1, math.ceil(q / 100.0 * len(self.lengths)))
        return self.lengths[rank - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "max_record_tokens": self.cap,
            "records": self.records,
            "unique_records": self.unique,
            "records_cut": round(100.0 * self.cut / self.records, 2) if self.records else 0.0,
            "tokens_p50": self.percentile(50),
            "tokens_p90": self.percentile(90),
            "longest_record_tokens": self.lengths[-1] if self.lengths else 0,
            "fields_shown": {f.field: round(f.percent, 2) for f in self.fields},
        }


def measure(records: Iterable[Record], tokens: RecordTokens, cap: int, k: int) -> BudgetReport:
    """Measure ``records`` (repeats count, as often as the split presents them) at a budget of ``cap``
    tokens, each under the longest tagging at ``k`` records a turn. Each distinct record is rendered
    once per field, so a large split costs its distinct records, not its turns.

    The tags are a fixed text (or fixed special tokens) in front of the fields, so the tagging that
    renders longest is found once, on the first record, and given to every record."""
    if cap < 1:
        raise ValueError(f"max_record_tokens must be >= 1, got {cap}")
    # Keyed by content: condensed KBs hold the same entity under a new id in every dialogue.
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, list[str]]] = {}
    lengths: list[int] = []
    holding: Counter[str] = Counter()
    shown: Counter[str] = Counter()
    count = 0
    tagging: TaggedRecord | None = None
    for record in records:
        key = (record.domain, tuple(record.fields.items()))
        if key not in seen:
            if tagging is None:
                tagging = longest_tagging(record, k, tokens)
            seen[key] = shown_fields(replace(tagging, record=record), tokens, cap)
        length, fields = seen[key]
        count += 1
        lengths.append(length)
        holding.update(field_order(record))
        shown.update(fields)
    shares = tuple(FieldShare(name, holding[name], shown[name]) for name in holding)
    return BudgetReport(cap, count, len(seen), tuple(sorted(lengths)), shares)


def split_records(split: Split, global_kb: KB | None) -> Iterable[Record]:
    """The records the split's turns search: each turn's own KB (condensed), or the dataset-level KB
    once (large scale: every turn searches the same records)."""
    if global_kb is not None:
        yield from global_kb.records
        return
    for dialogue in split.dialogues:
        for _ in dialogue.turns:
            yield from dialogue.kb.records


def format_report(report: BudgetReport, title: str) -> str:
    """The report as a few lines of text: lengths, the share cut, and each field's share shown."""
    s = report.summary()
    lines = [
        title,
        f"records: {report.records} measured ({report.unique} distinct), each with the longest tags "
        "its meta-knowledge mode can give it",
        f"tokens rendered whole: median {s['tokens_p50']}, 90th percentile {s['tokens_p90']}, "
        f"longest {s['longest_record_tokens']}",
        f"cut at max_record_tokens = {report.cap}: {s['records_cut']:.1f}% of the records",
        "fields shown whole (share of the records that hold them):",
    ]
    width = max((len(value_text(f.field)) for f in report.fields), default=0)
    lines += [f"  {value_text(f.field):<{width}}  {f.percent:5.1f}%" for f in report.fields]
    if report.cut:
        lines.append(
            f"to show every record whole: --set generator.max_record_tokens={s['longest_record_tokens']}"
        )
    return "\n".join(lines)
