"""MultiWOZ 2.1 (DF-Net's restaurant / hotel / attraction subset) from ``mwoz/dfnet_txt/``.

Each KB entity is written as a values line ending in ``name <entity>`` followed by one
``<entity> <attribute> <value>`` triple per attribute; records are built from the triples, which name
the values (in dev/test the values line repeats exactly the triples' values). These records equal the
KB dicts of CDNet's JSON twin (``mwoz/cdnet``) turn for turn. ``choice`` (how many entities matched,
e.g. ``21``) and ``ref`` (a booking reference) describe the dialogue's search, not the entity, so they
vary between copies of the same entity and are ignored when matching rows to the MultiWOZ databases.

There is no DF-Net train file with KBs; ``train`` is built by :mod:`mktod.datasets.mwoz_train`, and
the dataset-level KB (the MultiWOZ databases) comes from :mod:`mktod.datasets.mwoz_db`. Both are
imported lazily, so dev/test load without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mktod.datasets.base import DataPaths, register, require_file
from mktod.datasets.textfmt import (
    RawDialogue,
    RawKBRow,
    check_split,
    dialogue_id,
    parse_file,
    record_id,
    require_domain,
    turns_of,
)
from mktod.errors import DataError
from mktod.types import KB, Dialogue, Record, Split

SPLITS = ("train", "dev", "test")
DOMAINS = ("restaurant", "hotel", "attraction")
# Attributes that belong to the dialogue's search, not to the entity (see the module docstring).
DIALOGUE_LEVEL_ATTRIBUTES = frozenset({"choice", "ref"})


def _data_dir(paths: DataPaths) -> Path:
    return paths.data_dir / "mwoz" / "dfnet_txt"


def _opens_entity(row: RawKBRow) -> bool:
    return len(row.tokens) >= 3 and row.tokens[-2] == "name"


def _entities(rows: Sequence[RawKBRow], path: Path) -> list[dict[str, str]]:
    """Group KB rows into entities: a values line ``... name X`` then triples ``X attribute value``."""
    entities: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for row in rows:
        tokens = row.tokens
        if current is not None and len(tokens) == 3 and tokens[0] == current["name"] and tokens[1] != "name":
            if tokens[1] in current:
                raise DataError(
                    path, f"attribute {tokens[1]!r} given twice for {current['name']!r}", row.line
                )
            current[tokens[1]] = tokens[2]
        elif _opens_entity(row):
            current = {"name": tokens[-1]}
            entities.append(current)
        elif current is None:
            raise DataError(
                path, "KB row before any entity; expected a values line ending in 'name <entity>'", row.line
            )
        else:
            raise DataError(
                path,
                f"expected a triple '{current['name']} <attribute> <value>' or a values line ending in "
                f"'name <entity>', got {len(tokens)} tokens starting with {tokens[0]!r}",
                row.line,
            )
    return entities


def _dialogue(raw: RawDialogue, split: str, path: Path) -> Dialogue:
    domain = require_domain(raw, path, DOMAINS)
    did = dialogue_id(split, raw.index)
    records = tuple(
        Record(id=record_id(did, i), fields=fields, domain=domain)
        for i, fields in enumerate(_entities(raw.kb_rows, path))
    )
    return Dialogue(id=did, domain=domain, turns=turns_of(raw), kb=KB(records, name=did))


def load_file(path: Path, split: str) -> Split:
    """Parse one DF-Net-format file (dev, test, or the built train file)."""
    dialogues = tuple(_dialogue(raw, split, path) for raw in parse_file(path))
    return Split(dataset="mwoz", split=split, dialogues=dialogues)


class MWOZLoader:
    name: str = "mwoz"

    def load_split(self, split: str, paths: DataPaths) -> Split:
        check_split(split, SPLITS, self.name)
        if split == "train":
            # Lazy: building train needs the MultiWOZ databases and a cache; dev/test need neither.
            from mktod.datasets.mwoz_train import ensure_train_file

            return load_file(ensure_train_file(paths), split)
        return load_file(require_file(_data_dir(paths) / f"{split}.txt", f"MWOZ {split} split"), split)

    def global_kb(self, paths: DataPaths) -> KB | None:
        return self.dataset_kb(paths)

    def dataset_kb(self, paths: DataPaths) -> KB:
        """The three MultiWOZ databases, normalised to the dialogue KBs' attribute names and values."""
        from mktod.datasets.mwoz_db import load_db_records

        return KB(load_db_records(paths), name=self.name)

    def entity_file(self, paths: DataPaths) -> Path:
        return require_file(_data_dir(paths) / "global_entities.json", "MWOZ global entity list")


def _mismatch(record: Record, entity: Record) -> list[str]:
    """Entity attributes on which ``record`` and ``entity`` disagree (one lacking it counts)."""
    keys = [k for k in record.fields if k not in DIALOGUE_LEVEL_ATTRIBUTES]
    keys += [k for k in entity.fields if k not in record.fields and k not in DIALOGUE_LEVEL_ATTRIBUTES]
    return [
        f"{key} {record.fields.get(key)!r} vs {entity.fields.get(key)!r}"
        for key in keys
        if record.fields.get(key) != entity.fields.get(key)
    ]


def coverage_problems(split: Split, kb: KB) -> list[str]:
    """Rows of ``split``'s dialogue KBs that do not map onto exactly one entity of ``kb``, one line each.

    A row maps onto an entity of the same name (and domain) with the same entity attributes and values
    (``choice`` and ``ref`` excluded).
    """
    by_name: dict[str, list[Record]] = {}
    for entity in kb:
        by_name.setdefault(entity.fields.get("name", ""), []).append(entity)
    problems = []
    for dialogue in split.dialogues:
        for record in dialogue.kb:
            name = record.fields["name"]
            candidates = [e for e in by_name.get(name, []) if e.domain in ("", record.domain)]
            matching = [e for e in candidates if not _mismatch(record, e)]
            if len(matching) == 1:
                continue
            where = f"{split.split} {record.id} ({record.domain} {name})"
            if not candidates:
                problems.append(f"{where}: no dataset-level {record.domain} entity of that name")
            elif not matching:
                diffs = "; ".join(_mismatch(record, candidates[0]))
                problems.append(f"{where}: values differ from {candidates[0].id}: {diffs}")
            else:
                ids = ", ".join(e.id for e in matching)
                problems.append(f"{where}: matches {len(matching)} entities ({ids})")
    return problems


def check_kb_coverage(paths: DataPaths, splits: Sequence[str] = ("dev", "test")) -> list[str]:
    """Dev/test KB rows that do not map onto exactly one entity of the MultiWOZ databases."""
    loader = MWOZLoader()
    kb = loader.dataset_kb(paths)
    return [p for split in splits for p in coverage_problems(loader.load_split(split, paths), kb)]


register(MWOZLoader())
