"""The MultiWOZ databases, normalised to the value forms of DF-Net's MWOZ KB rows.

The large-scale MWOZ KB is the union of the restaurant, hotel and attraction databases (110 + 33 + 79 =
222 entities). The dialogues' condensed KB rows (``mwoz/dfnet_txt/{dev,test}.txt``) were written from the
same databases after DF-Net's tokenisation, so every DB row is rewritten the same way: lower-case,
punctuation split off into tokens, words joined with ``_``, ``stars`` as ``4_star``, an unknown attraction
price as ``<dontknow>``, and only the attributes the dialogue KB rows carry for that domain.
``unmatched_kb_rows`` checks the result against every dev/test KB row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mktod.datasets.base import DataPaths, require_file
from mktod.errors import DataError
from mktod.types import Record

DOMAINS: tuple[str, ...] = ("restaurant", "hotel", "attraction")

# Attribute order is the order of DF-Net's values line, so a record renders exactly as a dev/test row.
ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "restaurant": ("address", "area", "food", "phone", "postcode", "pricerange", "type"),
    "hotel": ("address", "area", "phone", "postcode", "pricerange", "stars", "type"),
    "attraction": ("address", "area", "phone", "postcode", "pricerange", "type"),
}

# Attributes a dev/test KB row carries that describe the dialogue (how many options the system found,
# the booking reference), not the entity; they are not in the databases.
DIALOGUE_ATTRIBUTES: tuple[str, ...] = ("choice", "ref")

UNKNOWN_VALUE = "<dontknow>"


def db_file(paths: DataPaths, domain: str) -> Path:
    return paths.data_dir / "mwoz" / "multiwoz_db" / f"{domain}_db.json"


def normalise_value(text: str, *, split_commas: bool = True) -> str:
    """Turn DB or dialogue text into DF-Net's joined token form.

    ``"12 St. Johns Street"`` -> ``"12_st_._johns_street"``, ``"rosa's bed and breakfast"`` ->
    ``"rosa_'_s_bed_and_breakfast"``. DF-Net split ``,``, ``'`` and ``.`` off as tokens, except a ``.``
    inside a number and the abbreviation ``no.`` before a house number (``"no._5_dale_'_s_brewery"``);
    its hotel addresses kept commas attached, hence ``split_commas``.
    """
    text = " ".join(text.lower().split())
    text = text.replace("'", " ' ")
    if split_commas:
        text = text.replace(",", " , ")
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " . ", text)
    return re.sub(r"(?<![^_])no_\._(?=\d)", "no._", "_".join(text.split()))


def _db_value(domain: str, attribute: str, raw: object) -> str | None:
    """One DB field in DF-Net's form, or None where the dialogue rows leave the attribute out."""
    if not isinstance(raw, str | int | float) or str(raw).strip() == "":
        return None
    value = str(raw).strip()
    if value == "?":
        return UNKNOWN_VALUE
    if attribute == "stars":
        return f"{value}_star"
    return normalise_value(value, split_commas=not (domain == "hotel" and attribute == "address"))


def _load_domain(path: Path, domain: str) -> Iterator[Record]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    if not isinstance(entries, list):
        raise DataError(path, "expected a JSON list of entities")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DataError(path, f"entity #{index} has no 'name' string")
        name = normalise_value(entry["name"])
        fields = {"name": name}
        for attribute in ATTRIBUTES[domain]:
            value = _db_value(domain, attribute, entry.get(attribute))
            if value is not None:
                fields[attribute] = value
        yield Record(id=f"{domain}/{name}", fields=fields, domain=domain)


def load_db_records(paths: DataPaths) -> tuple[Record, ...]:
    """All DB entities of the three domains, in file order, with ids ``<domain>/<name>``."""
    records: list[Record] = []
    for domain in DOMAINS:
        path = require_file(db_file(paths, domain), f"MultiWOZ {domain} database")
        records.extend(_load_domain(path, domain))
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise DataError(db_file(paths, record.domain), f"two entities normalise to id {record.id!r}")
        seen.add(record.id)
    return tuple(records)


@dataclass(frozen=True)
class KBRow:
    """One entity of a DF-Net dialogue KB: the triples under its values line."""

    domain: str
    name: str
    fields: Mapping[str, str]
    path: Path
    line: int


def read_dfnet_kb_rows(path: Path) -> tuple[KBRow, ...]:
    """The KB rows of a DF-Net text file (values line + ``name attribute value`` triples)."""
    rows: list[KBRow] = []
    domain = ""
    current: tuple[str, dict[str, str], int] | None = None

    def flush() -> None:
        if current is not None:
            rows.append(KBRow(domain, current[0], dict(current[1]), path, current[2]))

    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n")
            if line.startswith("#"):
                flush()
                current = None
                domain = line.strip("#")
                continue
            if not line.startswith("0 "):
                continue
            tokens = line[2:].split(" ")
            is_triple = current is not None and len(tokens) == 3 and tokens[0] == current[0]
            if is_triple and current is not None:
                current[1][tokens[1]] = tokens[2]
            elif len(tokens) >= 2 and tokens[-2] == "name":
                flush()
                current = (tokens[-1], {"name": tokens[-1]}, number)
            else:
                raise DataError(
                    path, "KB line is neither a values line ending in 'name <name>' nor a triple", number
                )
    flush()
    return tuple(rows)


def unmatched_kb_rows(paths: DataPaths) -> list[str]:
    """Describe every dev/test KB row that does not map onto exactly one DB record.

    A row matches the record of its domain with the same name whose values agree on every attribute
    the row carries (dialogue attributes ``choice`` and ``ref`` aside).
    """
    by_name: dict[tuple[str, str], list[Record]] = {}
    for record in load_db_records(paths):
        by_name.setdefault((record.domain, record.fields["name"]), []).append(record)
    problems: list[str] = []
    for split in ("dev", "test"):
        path = require_file(paths.data_dir / "mwoz" / "dfnet_txt" / f"{split}.txt", f"MWOZ {split} file")
        for row in read_dfnet_kb_rows(path):
            where = f"{split}.txt:{row.line} {row.domain}/{row.name}"
            candidates = by_name.get((row.domain, row.name), [])
            if len(candidates) != 1:
                problems.append(f"{where}: {len(candidates)} DB records with this name")
                continue
            record = candidates[0]
            diffs = [
                f"{attribute}={value!r} (DB: {record.fields.get(attribute)!r})"
                for attribute, value in row.fields.items()
                if attribute not in DIALOGUE_ATTRIBUTES and record.fields.get(attribute) != value
            ]
            missing = [a for a in record.fields if a not in row.fields]
            if diffs or missing:
                detail = "; ".join(diffs + [f"{a} missing from row" for a in missing])
                problems.append(f"{where}: {detail}")
    return problems
