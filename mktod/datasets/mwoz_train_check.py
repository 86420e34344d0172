"""How closely the MWOZ train build reproduces DF-Net: run it on GraphDialog's valid split, compare to dev.

GraphDialog's valid split holds the same 117 dialogues as DF-Net's dev file, in another order, so the
build's normalisation and gold-entity extraction can be scored turn by turn against DF-Net's own. The
numbers describe how faithful the built train split is; they are quoted in the docs.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from pathlib import Path

from mktod.datasets.base import DataPaths, require_file
from mktod.datasets.mwoz_db import DOMAINS, load_db_records
from mktod.datasets.mwoz_normalise import build_lexicon
from mktod.datasets.mwoz_train import BuiltTurn, load_global_entities, normalise_dialogue, read_graphdialog
from mktod.errors import DataError

# Tokens GraphDialog deleted everywhere; they cannot be recovered, so one comparison ignores them.
_DROPPED = frozenset({",", "."})


@dataclass(frozen=True)
class DevAgreement:
    dialogues: int
    turns: int
    responses_exact: int  # identical strings
    responses_equal: int  # identical once DF-Net's "," and "." tokens are removed
    users_equal: int
    gold_sets_equal: int
    gold_tp: int
    gold_fp: int
    gold_fn: int

    @property
    def gold_precision(self) -> float:
        return self.gold_tp / max(1, self.gold_tp + self.gold_fp)

    @property
    def gold_recall(self) -> float:
        return self.gold_tp / max(1, self.gold_tp + self.gold_fn)

    @property
    def gold_f1(self) -> float:
        p, r = self.gold_precision, self.gold_recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> str:
        pct = 100.0 / max(1, self.turns)
        return (
            f"{self.dialogues} dialogues, {self.turns} turns: responses equal to DF-Net "
            f"{self.responses_equal * pct:.2f}% ignoring ',' '.' "
            f"({self.responses_exact * pct:.2f}% exact), user turns {self.users_equal * pct:.2f}%; "
            f"gold entity sets equal {self.gold_sets_equal * pct:.2f}%, gold P/R/F1 "
            f"{100 * self.gold_precision:.2f}/{100 * self.gold_recall:.2f}/{100 * self.gold_f1:.2f}"
        )


@dataclass(frozen=True)
class _DevDialogue:
    domain: str
    turns: tuple[BuiltTurn, ...]


def _read_dfnet_dialogues(path: Path) -> list[_DevDialogue]:
    dialogues: list[_DevDialogue] = []
    domain = ""
    turns: list[BuiltTurn] = []
    for number, raw in enumerate([*path.read_text(encoding="utf-8").split("\n"), ""], start=1):
        line = raw.rstrip("\r")
        if not line:
            if turns:
                dialogues.append(_DevDialogue(domain, tuple(turns)))
            turns = []
        elif line.startswith("#"):
            domain = line.strip("#")
        elif not line.startswith("0 "):
            fields = line.split(" ", 1)[-1].split("\t")
            if len(fields) != 3:
                raise DataError(path, "expected 'N user<TAB>system<TAB>[entities]'", number)
            gold = ast.literal_eval(fields[2])
            turns.append(BuiltTurn(fields[0], fields[1], tuple(str(g) for g in gold)))
    return dialogues


def _key(text: str) -> list[str]:
    return [t for t in text.split() if t not in _DROPPED]


def _dialogue_key(turns: tuple[BuiltTurn, ...]) -> list[str]:
    return [token for turn in turns for token in (*_key(turn.user), "|", *_key(turn.response), "||")]


def dev_agreement(paths: DataPaths) -> DevAgreement:
    """Score the build's normalisation against DF-Net dev, via GraphDialog's valid split."""
    mwoz = paths.data_dir / "mwoz"
    valid = read_graphdialog(mwoz / "graphdialog_nokb_txt" / "valid.txt")
    dev = _read_dfnet_dialogues(require_file(mwoz / "dfnet_txt" / "dev.txt", "MWOZ dev file"))
    global_entities = load_global_entities(mwoz / "dfnet_txt" / "global_entities.json")
    records = load_db_records(paths)
    lexicons = {domain: build_lexicon(global_entities, records, domain) for domain in DOMAINS}
    ours = [
        _DevDialogue(d.domain, normalise_dialogue(d, lexicons[d.domain]))
        for d in valid
        if d.domain in DOMAINS
    ]
    # Greedy alignment: each dev dialogue takes the most similar unused one of the same domain and length.
    used: set[int] = set()
    pairs: list[tuple[_DevDialogue, _DevDialogue]] = []
    for reference in dev:
        matcher = difflib.SequenceMatcher(a=_dialogue_key(reference.turns), autojunk=False)
        best, best_ratio = -1, -1.0
        for index, candidate in enumerate(ours):
            if index in used or candidate.domain != reference.domain:
                continue
            if len(candidate.turns) != len(reference.turns):
                continue
            matcher.set_seq2(_dialogue_key(candidate.turns))
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best, best_ratio = index, ratio
        if best < 0:
            raise DataError(
                mwoz / "dfnet_txt" / "dev.txt",
                f"no GraphDialog valid dialogue matches dev dialogue #{len(pairs) + 1}",
            )
        used.add(best)
        pairs.append((reference, ours[best]))

    exact = equal = users = sets = tp = fp = fn = 0
    for reference, candidate in pairs:
        for ref_turn, our_turn in zip(reference.turns, candidate.turns, strict=True):
            exact += ref_turn.response == our_turn.response
            equal += _key(ref_turn.response) == _key(our_turn.response)
            users += _key(ref_turn.user) == _key(our_turn.user)
            gold, found = set(ref_turn.gold), set(our_turn.gold)
            sets += gold == found
            tp += len(gold & found)
            fp += len(found - gold)
            fn += len(gold - found)
    return DevAgreement(
        dialogues=len(pairs),
        turns=sum(len(r.turns) for r, _ in pairs),
        responses_exact=exact,
        responses_equal=equal,
        users_equal=users,
        gold_sets_equal=sets,
        gold_tp=tp,
        gold_fp=fp,
        gold_fn=fn,
    )
