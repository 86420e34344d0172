"""CamRest676 (KB-Retriever version, Qin et al. 2019) from EER's text: ``camrest/eer_txt/*.txt``.

KB rows carry no attribute names; the column order below was checked row for row against the JSON
twin ``camrest/kbretriever/CamRest676_*.json`` (``scenario.kb.items``, whose ``type`` is always
``restaurant`` and whose ``id`` the text drops). The files have no ``#domain#`` header: every dialogue
is a restaurant dialogue.
"""

from __future__ import annotations

import json
from pathlib import Path

from mktod.datasets.base import DataPaths, register, require_file
from mktod.datasets.textfmt import (
    RawDialogue,
    check_split,
    dialogue_id,
    parse_file,
    record_id,
    row_fields,
    turns_of,
)
from mktod.errors import DataError
from mktod.types import KB, Dialogue, Record, Split

SPLITS = ("train", "dev", "test")
DOMAIN = "restaurant"
COLUMNS = ("address", "area", "food", "location", "phone", "postcode", "pricerange", "name")


def _data_dir(paths: DataPaths) -> Path:
    return paths.data_dir / "camrest" / "eer_txt"


def _dialogue(raw: RawDialogue, split: str, path: Path) -> Dialogue:
    did = dialogue_id(split, raw.index)
    records = tuple(
        Record(id=record_id(did, i), fields=row_fields(row, COLUMNS, path, DOMAIN), domain=DOMAIN)
        for i, row in enumerate(raw.kb_rows)
    )
    return Dialogue(id=did, domain=raw.domain or DOMAIN, turns=turns_of(raw), kb=KB(records, name=did))


def _global_records(splits: list[Split], extra: list[dict[str, str]]) -> tuple[Record, ...]:
    """Distinct rows over all splits, sorted by (name, values); id = name, ``name#2``... on a clash."""
    distinct = {tuple(r.fields.items()) for s in splits for d in s.dialogues for r in d.kb}
    distinct |= {tuple(row.items()) for row in extra}
    ordered = sorted(distinct, key=lambda items: (dict(items)["name"], items))
    seen: dict[str, int] = {}
    records = []
    for items in ordered:
        name = dict(items)["name"]
        seen[name] = seen.get(name, 0) + 1
        rid = name if seen[name] == 1 else f"{name}#{seen[name]}"
        records.append(Record(id=rid, fields=dict(items), domain=DOMAIN))
    return tuple(records)


def eer_postcode(postcode: str) -> str:
    """CDNet's ``cb21nt`` in EER's spelling ``c.b_2,_1_n.t`` (outward code, then digit + two letters)."""
    code = postcode.strip().lower().replace(" ", "")
    if len(code) < 6 or not code.startswith("cb") or not code[-3].isdigit():
        return postcode
    outward, inward = code[2:-3], code[-3:]
    return f"c.b_{outward},_{inward[0]}_{inward[1]}.{inward[2]}"


def _cdnet_extra_records(paths: DataPaths, known_names: set[str]) -> list[dict[str, str]]:
    """Restaurants that only CDNet's CamRest KBs show, in EER's value forms.

    The KB-Retriever dialogues only ever show 91 of the 110 CamRest restaurants; CDNet's KBs (all
    rows matching each API call) show all of them. Without the other 19 the large-scale KB would be
    95 rows where the literature uses about 110-112. Values agree with EER's where both have a
    restaurant, except the postcode spelling, converted here; CDNet has no ``location``.
    """
    extra: dict[str, dict[str, str]] = {}
    for split in ("train", "val", "test"):
        path = require_file(paths.data_dir / "camrest" / "cdnet" / f"{split}.json", "CDNet CamRest file")
        try:
            turns = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON ({exc.msg})", line=exc.lineno) from None
        for i, turn in enumerate(turns):
            rows = turn.get("kb", []) if isinstance(turn, dict) else None
            if not isinstance(rows, list):
                raise DataError(path, f"turn {i}: expected a 'kb' list of records")
            for row in rows:
                if not isinstance(row, dict) or not isinstance(row.get("name"), str):
                    raise DataError(path, f"turn {i}: expected KB records with a 'name'")
                if row["name"] in known_names or row["name"] in extra:
                    continue
                fields = {k: str(v) for k, v in row.items()}
                if "postcode" in fields:
                    fields["postcode"] = eer_postcode(fields["postcode"])
                extra[row["name"]] = {c: fields[c] for c in COLUMNS if c in fields}
    return list(extra.values())


class CamRestLoader:
    name: str = "camrest"

    def load_split(self, split: str, paths: DataPaths) -> Split:
        check_split(split, SPLITS, self.name)
        path = require_file(_data_dir(paths) / f"{split}.txt", f"CamRest {split} split")
        dialogues = tuple(_dialogue(raw, split, path) for raw in parse_file(path))
        return Split(dataset=self.name, split=split, dialogues=dialogues)

    def global_kb(self, paths: DataPaths) -> KB | None:
        # CamRest has no separate database file; the literature's large-scale KB is the union of all
        # dialogues' KB rows (here: EER's rows plus the restaurants only CDNet's KBs show).
        splits = [self.load_split(s, paths) for s in SPLITS]
        names = {r.fields["name"] for s in splits for d in s.dialogues for r in d.kb}
        return KB(_global_records(splits, _cdnet_extra_records(paths, names)), name=self.name)

    def entity_file(self, paths: DataPaths) -> Path:
        return require_file(_data_dir(paths) / "camrest_entities.json", "CamRest global entity list")


register(CamRestLoader())
