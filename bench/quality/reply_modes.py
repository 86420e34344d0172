"""How a run's replies fail, turn by turn: closing replies where none is due, and echoes of the previous
system turn.

Entity F1 says that a run got worse, not how. The SMD SmolLM2 runs trained past 120 turns said *you are
welcome* to a third of the test turns, first turns included: the sign of a generator that no longer
reads the user's last message. For every row of
bench/results/quality_local.json on one dataset's test split, with the predictions it kept, this script
aligns each prediction with its turn (the files hold the first N turns in file order) and counts

- ``closing``: replies that are a closing formula (*you are welcome*, *no problem*, ...; CLOSING);
- ``closing_misplaced``: closing replies to a turn whose reference is not one, as a share of those turns;
- ``closing_first``: closing replies to a dialogue's first turn, as a share of first turns;
- ``echoes_previous``: replies to a later turn whose word-overlap F1 with the previous system turn is at
  least ECHO_F1 and above their overlap with the reference, as a share of later turns.

The references get the same counts, as the rate each should be compared with. It writes
bench/results/reply_modes_DATASET.json, a table (.md) and a plot (.png):

    python bench/quality/reply_modes.py --dataset smd
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mktod.cli_common import add_path_options, offline_data_paths
from mktod.datasets import DataPaths, get_loader
from mktod.kb import value_text
from mktod.metrics import f1_precision_recall, normalize

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
RECORD = RESULTS / "quality_local.json"
# Phrases that make a reply a closing formula (after mktod.metrics.normalize, which turns "you're" into
# "you re"). SMD's references close with these in 30% of the training turns.
CLOSING = (
    "welcome",
    "no problem",
    "anytime",
    "happy to help",
    "glad to help",
    "glad i could help",
    "my pleasure",
)
ECHO_F1 = 0.5


def is_closing(text: str) -> bool:
    return any(phrase in text for phrase in CLOSING)


def overlap_f1(a: str, b: str) -> float:
    """Word-overlap F1 (0-1) of two texts (bags of words, as SQuAD's token F1)."""
    wa, wb = a.split(), b.split()
    common = sum((Counter(wa) & Counter(wb)).values())
    return f1_precision_recall(common, len(wa) - common, len(wb) - common)[0] / 100


@dataclass(frozen=True)
class Turn:
    """What the counts need of one test turn, normalised: its position, reference and previous answer."""

    first: bool
    reference: str
    previous: str  # the previous system turn ("" on a first turn)


def split_turns(dataset: str, paths: DataPaths, split: str = "test") -> list[Turn]:
    out = []
    for dialogue, t, turn in get_loader(dataset).load_split(split, paths).iter_turns():
        previous = normalize(value_text(dialogue.turns[t - 1].response)) if t else ""
        out.append(Turn(t == 0, normalize(value_text(turn.response)), previous))
    return out


def echoes_previous(reply: str, turn: Turn) -> bool:
    if turn.first:
        return False
    echo = overlap_f1(reply, turn.previous)
    return echo >= ECHO_F1 and echo > overlap_f1(reply, turn.reference)


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def count(replies: Sequence[str], turns: Sequence[Turn]) -> dict[str, Any]:
    """The counts of the module docstring for ``replies`` to the first len(replies) of ``turns``."""
    if len(replies) > len(turns):
        raise ValueError(f"{len(replies)} replies but the split has {len(turns)} turns")
    pairs = list(zip((normalize(r) for r in replies), turns, strict=False))
    due = [t for _, t in pairs if is_closing(t.reference)]
    not_due = [(r, t) for r, t in pairs if not is_closing(t.reference)]
    firsts = [(r, t) for r, t in pairs if t.first]
    later = [(r, t) for r, t in pairs if not t.first]
    return {
        "turns": len(pairs),
        "closing": _percent(sum(is_closing(r) for r, _ in pairs), len(pairs)),
        "closing_due": _percent(len(due), len(pairs)),
        "closing_misplaced": _percent(sum(is_closing(r) for r, _ in not_due), len(not_due)),
        "closing_first": _percent(sum(is_closing(r) for r, _ in firsts), len(firsts)),
        "echoes_previous": _percent(sum(echoes_previous(r, t) for r, t in later), len(later)),
    }


def measure(dataset: str, turns: Sequence[Turn], record: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per row of ``record`` on ``dataset``'s test split whose predictions are kept, after
    one for the references themselves (over the most turns a row covers)."""
    rows = []
    for row in record["rows"]:
        kept = row.get("kept_predictions")
        if row["dataset"] != dataset or row.get("split") != "test" or not kept or not (ROOT / kept).is_file():
            continue
        replies = (ROOT / kept).read_text(encoding="utf-8").splitlines()
        rows.append(
            {"row": row["row"], "label": row["label"], "entity_f1": row["entity_f1"], **count(replies, turns)}
        )
    if not rows:
        raise SystemExit(f"no row of {RECORD} on {dataset}'s test split has its predictions kept")
    widest = max(r["turns"] for r in rows)
    references = [t.reference for t in turns[:widest]]
    return [
        {"row": "references", "label": "the references", "entity_f1": None, **count(references, turns)},
        *rows,
    ]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def table(dataset: str, rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"# Reply modes on {dataset}'s test split",
        "",
        "Written by `python bench/quality/reply_modes.py --dataset "
        + dataset
        + "` from the predictions that",
        "bench/results/quality_local.json keeps. Shares in %: *closing* of all turns; *misplaced* of the",
        "turns whose reference is no closing; *on first turns* of dialogues' first turns; *echoes previous*",
        f"of later turns (word-overlap F1 >= {ECHO_F1} with the previous system turn, and above the overlap",
        "with the reference). The first line counts the references on the most turns a row covers.",
        "",
        "| row | turns | Entity F1 | closing | misplaced closing | closing on first turns "
        "| echoes previous |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f1 = "" if r["entity_f1"] is None else f"{r['entity_f1']:.2f}"
        cells = [_cell(r[k]) for k in ("closing", "closing_misplaced", "closing_first", "echoes_previous")]
        lines.append(f"| {r['row']} | {r['turns']} | {f1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(dataset: str, rows: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["row"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    height = 0.4
    ys = range(len(rows))
    ax.barh(
        [y - height / 2 for y in ys],
        [r["closing_misplaced"] or 0 for r in rows],
        height,
        label="misplaced closing",
    )
    ax.barh(
        [y + height / 2 for y in ys],
        [r["echoes_previous"] or 0 for r in rows],
        height,
        label="echoes previous",
    )
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("% of the turns where it is not due")
    ax.set_title(f"{dataset}: replies that do not answer the user's last message")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="smd")
    ap.add_argument(
        "--out", type=Path, help="writes OUT.json, .md and .png (bench/results/reply_modes_DATASET)"
    )
    add_path_options(ap)
    args = ap.parse_args(argv)
    paths = offline_data_paths(args)
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    rows = measure(args.dataset, split_turns(args.dataset, paths), record)
    out: Path = args.out or RESULTS / f"reply_modes_{args.dataset}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"dataset": args.dataset, "rows": rows}, indent=1) + "\n")
    text = table(args.dataset, rows)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    plot(args.dataset, rows, out.with_suffix(".png"))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
