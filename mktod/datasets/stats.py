"""Per-split dataset statistics next to the counts the literature reports (``mktod data stats``).

The reference counts are those of EVALUATION.md's canonical-splits table (which match the files) and,
for the dataset-level KBs, MK-TOD's paper (MWOZ 223 entities, CamRest 112).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mktod.datasets import get_loader
from mktod.datasets.base import SPLITS, DataPaths
from mktod.types import KB, Split

DEFAULT_DATASETS = ("smd", "camrest", "mwoz")


@dataclass(frozen=True)
class Reference:
    """What the literature reports for one split; None where it reports nothing."""

    dialogues: int | None
    system_turns: int | None
    global_kb_size: int | None
    approximate: bool = False  # the count is quoted as "≈" (MWOZ train, rebuilt here)
    source: str = "EVALUATION.md"


@dataclass(frozen=True)
class SplitStats:
    dataset: str
    split: str
    dialogues: int | None
    system_turns: int | None
    turns_with_entities: int | None  # turns whose gold list has at least one entity
    kb_rows_min: int | None  # rows per dialogue KB
    kb_rows_mean: float | None
    kb_rows_max: int | None
    global_kb_size: int | None  # the dataset-level KB; None where there is none or it failed
    reference: Reference
    kb_unmapped: int | None = None  # dialogue KB rows not mapping onto one global entity (MWOZ only)
    error: str | None = None  # why the split could not be loaded (its counts are then None)
    global_kb_error: str | None = None


_PAPER = "EVALUATION.md; global KB: MK-TOD paper"
REFERENCES: dict[tuple[str, str], Reference] = {
    ("smd", "train"): Reference(2425, 6290, None),
    ("smd", "dev"): Reference(302, 777, None),
    ("smd", "test"): Reference(304, 807, None),
    ("camrest", "train"): Reference(405, 1666, 112, source=_PAPER),
    ("camrest", "dev"): Reference(135, 539, 112, source=_PAPER),
    ("camrest", "test"): Reference(136, 539, 112, source=_PAPER),
    ("mwoz", "train"): Reference(1839, 8500, 223, approximate=True, source=_PAPER),
    ("mwoz", "dev"): Reference(117, 576, 223, source=_PAPER),
    ("mwoz", "test"): Reference(141, 711, 223, source=_PAPER),
}


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _coverage_check(dataset: str) -> Callable[[Split, KB], list[str]] | None:
    if dataset == "mwoz":
        from mktod.datasets.mwoz import coverage_problems

        return coverage_problems
    return None


def _split_stats(split: Split, reference: Reference, kb: KB | None, kb_error: str | None) -> SplitStats:
    sizes = [len(d.kb) for d in split.dialogues]
    turns = [t for d in split.dialogues for t in d.turns]
    check = _coverage_check(split.dataset)
    return SplitStats(
        dataset=split.dataset,
        split=split.split,
        dialogues=len(split.dialogues),
        system_turns=len(turns),
        turns_with_entities=sum(1 for t in turns if t.gold_entities),
        kb_rows_min=min(sizes, default=0),
        kb_rows_mean=sum(sizes) / len(sizes) if sizes else 0.0,
        kb_rows_max=max(sizes, default=0),
        global_kb_size=len(kb) if kb is not None else None,
        reference=reference,
        kb_unmapped=len(check(split, kb)) if check is not None and kb is not None else None,
        global_kb_error=kb_error,
    )


def _failed(
    dataset: str, split: str, reference: Reference, kb: KB | None, kb_error: str | None, error: str
) -> SplitStats:
    return SplitStats(
        dataset=dataset,
        split=split,
        dialogues=None,
        system_turns=None,
        turns_with_entities=None,
        kb_rows_min=None,
        kb_rows_mean=None,
        kb_rows_max=None,
        global_kb_size=len(kb) if kb is not None else None,
        reference=reference,
        error=error,
        global_kb_error=kb_error,
    )


def compute_stats(paths: DataPaths, datasets: Sequence[str] | None = None) -> tuple[SplitStats, ...]:
    """Statistics for every split of ``datasets`` (default: SMD, CamRest, MWOZ).

    A split or global KB that fails to load (e.g. the MWOZ train build) is reported with its error
    instead of aborting, so the other splits still show. An unknown dataset name is an error.
    """
    out: list[SplitStats] = []
    for name in datasets or DEFAULT_DATASETS:
        loader = get_loader(name)
        kb: KB | None = None
        kb_error: str | None = None
        try:
            kb = loader.global_kb(paths)
        # Deliberately broad: one failing build must not hide every other number; the error is shown.
        except Exception as exc:
            kb_error = _describe(exc)
        for split_name in SPLITS:
            reference = REFERENCES.get((name, split_name), Reference(None, None, None, source="none"))
            try:
                split = loader.load_split(split_name, paths)
            except Exception as exc:
                out.append(_failed(name, split_name, reference, kb, kb_error, _describe(exc)))
                continue
            out.append(_split_stats(split, reference, kb, kb_error))
    return tuple(out)


def stats_to_json(stats: Sequence[SplitStats]) -> list[dict[str, object]]:
    return [dataclasses.asdict(s) for s in stats]


def _ours_ref(ours: int | None, ref: int | None, approximate: bool = False, flag_diff: bool = True) -> str:
    left = "-" if ours is None else str(ours)
    if ref is None:
        return f"{left} / -"
    # "*" flags an exact reference count that ours misses, so discrepancies stand out in the table.
    flag = "" if approximate or not flag_diff or ours is None or ours == ref else " *"
    return f"{left} / {'~' if approximate else ''}{ref}{flag}"


def format_stats_table(stats: Sequence[SplitStats]) -> str:
    """An aligned text table: our counts next to the reference counts, then notes for errors."""
    header = (
        "dataset",
        "split",
        "dialogues ours/ref",
        "turns ours/ref",
        "turns w/ entities",
        "KB rows min/mean/max",
        "global KB ours/ref",
        "KB rows unmapped",
    )
    rows: list[tuple[str, ...]] = [header]
    notes: list[str] = []
    for s in stats:
        ref = s.reference
        kb_rows = (
            "-"
            if s.kb_rows_min is None or s.kb_rows_mean is None
            else f"{s.kb_rows_min}/{s.kb_rows_mean:.2f}/{s.kb_rows_max}"
        )
        rows.append(
            (
                s.dataset,
                s.split,
                _ours_ref(s.dialogues, ref.dialogues),
                _ours_ref(s.system_turns, ref.system_turns, ref.approximate),
                "-" if s.turns_with_entities is None else str(s.turns_with_entities),
                kb_rows,
                # The paper's KBs were built otherwise (MWOZ 223, CamRest 112): a gap is expected.
                _ours_ref(s.global_kb_size, ref.global_kb_size, flag_diff=False),
                "-" if s.kb_unmapped is None else str(s.kb_unmapped),
            )
        )
        if s.error is not None:
            notes.append(f"{s.dataset} {s.split}: not loaded: {s.error}")
        if s.global_kb_error is not None and s.split == SPLITS[0]:
            notes.append(f"{s.dataset} global KB: not loaded: {s.global_kb_error}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    legend = "ref: EVALUATION.md (global KB: MK-TOD paper); ~ approximate; * differs from the reference"
    return "\n".join([*lines, "", legend, *notes])
