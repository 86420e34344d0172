"""Is system A's Entity F1 really different from system B's on the same turns? A paired bootstrap.

Two systems scored on the same test turns differ by a few points on 100 turns all the time. The
bootstrap redraws the test set many times (whole dialogues with replacement, since the turns of one
dialogue are not independent: they share a KB and a goal) and recomputes both systems' micro Entity F1
on each redraw; the spread of A - B over the redraws is the uncertainty of the difference. A 95%
interval that includes 0 means the data cannot tell the two apart.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from mktod.metrics import EntityCounts, f1_precision_recall


@dataclass(frozen=True)
class PairedDifference:
    """F1(A) - F1(B) on the turns as given, and its bootstrap interval (percentiles), 0-100 points."""

    difference: float
    low: float
    high: float
    confidence: float
    draws: int
    groups: int  # dialogues resampled

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap_f1(
    a: Sequence[EntityCounts],
    b: Sequence[EntityCounts],
    groups: Sequence[str],
    draws: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Micro Entity F1 of A minus B over the same turns, with a dialogue-level paired bootstrap.

    ``a[t]`` / ``b[t]``: turn t's counts under each system (:func:`mktod.metrics.score_turns`);
    ``groups[t]``: the dialogue turn t belongs to. Deterministic for a given ``seed``.
    """
    if not len(a) == len(b) == len(groups):
        raise ValueError(f"need one entry per turn: {len(a)} / {len(b)} counts, {len(groups)} groups")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if draws < 1:
        raise ValueError(f"draws must be positive, got {draws}")
    # Sum each dialogue's counts once; a redraw then only adds up dialogue totals.
    totals: dict[str, list[int]] = {}
    for x, y, group in zip(a, b, groups, strict=True):
        row = totals.setdefault(group, [0] * 6)
        for i, value in enumerate((*x, *y)):
            row[i] += value
    rows = list(totals.values())

    def difference(chosen: Sequence[list[int]]) -> float:
        s = [sum(row[i] for row in chosen) for i in range(6)]
        return f1_precision_recall(s[0], s[1], s[2])[0] - f1_precision_recall(s[3], s[4], s[5])[0]

    if not rows:
        return PairedDifference(0.0, 0.0, 0.0, confidence, draws, 0)
    observed = difference(rows)
    rng = random.Random(seed)
    samples = sorted(difference(rng.choices(rows, k=len(rows))) for _ in range(draws))
    tail = (1 - confidence) / 2
    low = samples[math.floor(tail * (draws - 1))]
    high = samples[math.ceil((1 - tail) * (draws - 1))]
    return PairedDifference(observed, low, high, confidence, draws, len(rows))
