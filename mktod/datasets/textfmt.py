"""Parser for the GLMP / EER / DF-Net dialogue text format shared by SMD, CamRest and MWOZ.

The format::

    #navigate#                                   optional domain header, opens a dialogue
    0 2_miles<TAB>no_traffic<TAB>...             a KB row (tokens separated by tabs or spaces)
    1 where is it ?<TAB>it is at x .<TAB>['x']   turn N: user, system, gold entities
    <blank line>                                 ends the dialogue

The parser returns raw dialogues (domain, KB row tokens, turns) with their line numbers; each dataset
module gives the KB rows attribute names and builds typed :class:`~mktod.types.Dialogue` objects.
Every malformed line raises :class:`~mktod.errors.DataError` naming the file and the 1-based line.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mktod.errors import DataError
from mktod.types import Turn

_DOMAIN_RE = re.compile(r"#([A-Za-z_]+)#")
_TURN_RE = re.compile(r"([0-9]+) (.*)")
_LINE_KINDS = (
    "expected '#domain#', a KB row '0 v1 v2 ...', a turn 'N user<TAB>system<TAB>[entities]' or a blank line"
)


@dataclass(frozen=True)
class RawKBRow:
    tokens: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class RawTurn:
    number: int
    user: str
    system: str
    gold: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class RawDialogue:
    """One dialogue as written in the file; ``line`` is where it starts (1-based)."""

    index: int
    domain: str | None
    kb_rows: tuple[RawKBRow, ...]
    turns: tuple[RawTurn, ...]
    line: int


def parse_gold(text: str, path: Path, line: int) -> tuple[str, ...]:
    """Parse ``['a', 'b']``; only a literal list of strings is accepted (never evaluated as code)."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataError(
            path,
            f"gold entities must be a Python list literal of strings, got {text.strip()!r} ({exc})",
            line,
        ) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(path, f"gold entities must be a list of strings, got {text.strip()!r}", line)
    return tuple(value)


class _Builder:
    """Accumulates the lines of the dialogue being read."""

    def __init__(self, index: int, line: int, domain: str | None) -> None:
        self.index = index
        self.line = line
        self.domain = domain
        self.kb_rows: list[RawKBRow] = []
        self.turns: list[RawTurn] = []

    def finish(self) -> RawDialogue:
        # A dialogue without turns is kept: SMD's train file has four (a header and KB, no turns), and
        # the canonical dialogue counts include them.
        return RawDialogue(self.index, self.domain, tuple(self.kb_rows), tuple(self.turns), self.line)


def parse_lines(lines: Iterable[str], path: Path) -> tuple[RawDialogue, ...]:
    """Parse the lines of one file; ``path`` is only used in error messages."""
    dialogues: list[RawDialogue] = []
    current: _Builder | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            if current is not None:
                dialogues.append(current.finish())
                current = None
            continue
        header = _DOMAIN_RE.fullmatch(line.strip())
        if header is not None:
            if current is not None:
                raise DataError(path, "'#domain#' inside a dialogue; expected a blank line before it", lineno)
            current = _Builder(len(dialogues), lineno, header.group(1))
            continue
        if current is None:
            # CamRest's files have no domain header: the first KB row or turn opens the dialogue.
            current = _Builder(len(dialogues), lineno, None)
        if line.startswith("0 "):
            tokens = tuple(line[2:].split())
            if not tokens:
                raise DataError(path, "empty KB row; expected '0 ' followed by values", lineno)
            if current.turns:
                raise DataError(
                    path, "KB row after a turn; KB rows must come before the dialogue's turns", lineno
                )
            current.kb_rows.append(RawKBRow(tokens, lineno))
            continue
        match = _TURN_RE.fullmatch(line)
        if match is None:
            raise DataError(path, _LINE_KINDS, lineno)
        parts = match.group(2).split("\t")
        if len(parts) != 3:
            raise DataError(
                path,
                f"a turn needs 3 tab-separated fields (user, system, [entities]), found {len(parts)}",
                lineno,
            )
        number = int(match.group(1))
        expected = len(current.turns) + 1
        if number != expected:
            raise DataError(
                path, f"turn number {number}, expected {expected} (turns count up from 1)", lineno
            )
        user, system, gold = parts
        current.turns.append(
            RawTurn(number, user.strip(), system.strip(), parse_gold(gold, path, lineno), lineno)
        )
    if current is not None:
        dialogues.append(current.finish())
    return tuple(dialogues)


def parse_file(path: Path) -> tuple[RawDialogue, ...]:
    """Parse a dataset text file; an empty file is an error (a truncated download, most likely)."""
    try:
        with path.open(encoding="utf-8") as handle:
            dialogues = parse_lines(handle, path)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc})") from None
    if not dialogues:
        raise DataError(path, "no dialogues in file")
    return dialogues


def turns_of(raw: RawDialogue) -> tuple[Turn, ...]:
    return tuple(Turn(user=t.user, response=t.system, gold_entities=t.gold) for t in raw.turns)


def dialogue_id(split: str, index: int) -> str:
    """Stable, sortable id: the split and the 0-based position in the file."""
    return f"{split}-{index:04d}"


def record_id(dialogue: str, row: int) -> str:
    """Unique within a dialogue KB; also unique across a split since dialogue ids are."""
    return f"{dialogue}/{row}"


def check_split(split: str, valid: Sequence[str], dataset: str) -> None:
    if split not in valid:
        raise DataError(dataset, f"unknown split {split!r}; valid splits: {', '.join(valid)}")


def require_domain(raw: RawDialogue, path: Path, allowed: Sequence[str]) -> str:
    if raw.domain is None:
        raise DataError(
            path, f"dialogue has no '#domain#' header; expected one of {', '.join(allowed)}", raw.line
        )
    if raw.domain not in allowed:
        raise DataError(
            path, f"unknown domain {raw.domain!r}; expected one of {', '.join(allowed)}", raw.line
        )
    return raw.domain


def row_fields(row: RawKBRow, columns: Sequence[str], path: Path, what: str) -> dict[str, str]:
    """Name a row's values by position; a row of the wrong width is an error at its line."""
    if len(row.tokens) != len(columns):
        raise DataError(
            path,
            f"{what} KB row has {len(row.tokens)} values, expected {len(columns)} ({', '.join(columns)})",
            row.line,
        )
    return dict(zip(columns, row.tokens, strict=True))
