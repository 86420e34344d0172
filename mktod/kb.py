"""KB storage (JSON Lines files) and record linearisation.

A KB file holds one JSON object per line: ``{"id": ..., "domain": ..., "fields": {attr: value}}``.
Linearisation turns a record into the plain text both the retriever and the generator read
(METHOD.md §2): ``name jinling noodle bar ; area centre ; food chinese``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mktod.errors import DataError
from mktod.types import KB, Record

# The name goes first so that truncation (records are cut at a token budget) never drops it.
_FIRST_FIELDS = ("name", "poi", "event", "location")


def value_text(value: str) -> str:
    """Dataset values join words with ``_``; models read them as words."""
    return " ".join(value.replace("_", " ").split()).lower()


def field_order(record: Record) -> list[str]:
    """The record's attributes in the order ``linearise`` writes them (and a budget cuts them last
    to first): identifying fields first, the rest in the record's own order (a stable sort)."""
    rest = len(_FIRST_FIELDS)
    return sorted(record.fields, key=lambda k: _FIRST_FIELDS.index(k) if k in _FIRST_FIELDS else rest)


def linearise(record: Record) -> str:
    return " ; ".join(f"{value_text(k)} {value_text(record.fields[k])}" for k in field_order(record))


def record_from_json(obj: object, where: str) -> Record:
    """Validate one JSON object as a record; errors name ``where`` and the offending field."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise ValueError(f"{where}: field 'id' must be a non-empty string")
    fields = obj.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ValueError(f"{where}: field 'fields' must be a non-empty object of attribute -> value")
    for key, value in fields.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{where}: attribute names must be non-empty strings")
        if not isinstance(value, str):
            raise ValueError(f"{where}: fields.{key} must be a string, got {type(value).__name__}")
    domain = obj.get("domain", "")
    if not isinstance(domain, str):
        raise ValueError(f"{where}: field 'domain' must be a string")
    return Record(id=rid, fields=fields, domain=domain)


def record_to_json(record: Record) -> dict[str, object]:
    return {"id": record.id, "domain": record.domain, "fields": dict(record.fields)}


def load_kb(path: Path, name: str | None = None) -> KB:
    """Read a JSON Lines KB; every bad line is reported with its line number."""
    try:
        # split("\n"), not splitlines(): values may hold U+2028 and friends, which JSON keeps raw.
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise DataError(path, "KB file not found") from None
    records: list[Record] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON ({exc.msg})", line=lineno) from None
        try:
            record = record_from_json(obj, "record")
        except ValueError as exc:
            raise DataError(path, str(exc), line=lineno) from None
        if record.id in seen:
            raise DataError(path, f"duplicate record id {record.id!r}", line=lineno)
        seen.add(record.id)
        records.append(record)
    return KB(tuple(records), name=name if name is not None else path.stem)


def save_kb(kb: Iterable[Record], path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in kb:
                fh.write(json.dumps(record_to_json(record), ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
