"""SMD (KVRET, Eric et al. 2017) from EER's GLMP-style text: ``smd/eer_txt/{train,dev,test}.txt``.

The text files carry KB rows without attribute names. The names below were checked, row for row,
against CDNet's JSON twin of dev/test (``smd/cdnet/{val,test}.json``), whose KB rows are dicts:

* navigate: ``distance traffic_info poi_type address poi``
* schedule: ``room agenda time date party event``; ``<empty>`` marks a missing value and is dropped,
  as CDNet does (its rows simply lack the key).
* weather: one row per location with a whole week: today's day name, then for monday..sunday the
  triple ``weather low high``, then the location. CDNet splits it into one dict per (location, day);
  we keep one record per row so a dialogue KB has as many records as the file has rows.
"""

from __future__ import annotations

from pathlib import Path

from mktod.datasets.base import DataPaths, register, require_file
from mktod.datasets.textfmt import (
    RawDialogue,
    check_split,
    dialogue_id,
    parse_file,
    record_id,
    require_domain,
    row_fields,
    turns_of,
)
from mktod.types import KB, Dialogue, Record, Split

SPLITS = ("train", "dev", "test")
DOMAINS = ("navigate", "schedule", "weather")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EMPTY = "<empty>"

NAVIGATE_COLUMNS = ("distance", "traffic_info", "poi_type", "address", "poi")
SCHEDULE_COLUMNS = ("room", "agenda", "time", "date", "party", "event")
WEATHER_COLUMNS = (
    "today",
    *(f"{day}_{part}" for day in DAYS for part in ("weather", "low", "high")),
    "location",
)
COLUMNS = {"navigate": NAVIGATE_COLUMNS, "schedule": SCHEDULE_COLUMNS, "weather": WEATHER_COLUMNS}


def _data_dir(paths: DataPaths) -> Path:
    return paths.data_dir / "smd" / "eer_txt"


def _record(domain: str, fields: dict[str, str], rid: str) -> Record:
    # Fields keep the file's column order; kb.linearise puts the identifying attribute first.
    return Record(id=rid, fields={k: v for k, v in fields.items() if v != EMPTY}, domain=domain)


def _dialogue(raw: RawDialogue, split: str, path: Path) -> Dialogue:
    domain = require_domain(raw, path, DOMAINS)
    did = dialogue_id(split, raw.index)
    records = tuple(
        _record(domain, row_fields(row, COLUMNS[domain], path, domain), record_id(did, i))
        for i, row in enumerate(raw.kb_rows)
    )
    return Dialogue(id=did, domain=domain, turns=turns_of(raw), kb=KB(records, name=did))


class SMDLoader:
    name: str = "smd"

    def load_split(self, split: str, paths: DataPaths) -> Split:
        check_split(split, SPLITS, self.name)
        path = require_file(_data_dir(paths) / f"{split}.txt", f"SMD {split} split")
        dialogues = tuple(_dialogue(raw, split, path) for raw in parse_file(path))
        return Split(dataset=self.name, split=split, dialogues=dialogues)

    def global_kb(self, paths: DataPaths) -> KB | None:
        # The literature has no large-scale SMD KB: each dialogue comes with its own.
        return None

    def entity_file(self, paths: DataPaths) -> Path:
        return require_file(_data_dir(paths) / "kvret_entities.json", "SMD global entity list")


register(SMDLoader())
