"""Build the MWOZ train split in DF-Net's text format, seeded and cached.

No released MWOZ train file has DF-Net's KBs, so it is rebuilt (EVALUATION.md, "MWOZ train") from
GraphDialog's train dialogues (restaurant, hotel, attraction; ``#train#`` dropped), the MultiWOZ
databases and DF-Net's global entity list: utterances are normalised to DF-Net's token forms
(:mod:`mktod.datasets.mwoz_normalise`), each turn gets its gold entities, and each dialogue gets a
7-row KB of the DB rows it mentions by name plus random rows of its domain, rendered as DF-Net renders
KB rows. The output is cached under ``cache_dir/mwoz`` with a manifest of input hashes.

Fidelity, measured by :func:`mktod.datasets.mwoz_train_check.dev_agreement` (the same procedure run on
GraphDialog's valid split, which holds DF-Net dev's 117 dialogues / 576 turns): 98.09 % of responses and
99.65 % of user turns equal DF-Net's once the ``,`` and ``.`` tokens GraphDialog deleted are ignored
(16.32 % of responses are identical strings); per-turn gold entity sets equal DF-Net's on 87.33 % of turns,
micro P/R/F1 90.66 / 97.53 / 93.97.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mktod.datasets.base import DataPaths, require_file
from mktod.datasets.mwoz_db import DOMAINS, db_file, load_db_records
from mktod.datasets.mwoz_normalise import EntityLexicon, build_lexicon, gold_entities, normalise_utterance
from mktod.errors import DataError
from mktod.fetch import sha256_of
from mktod.types import Record

# Bump whenever the output for the same inputs changes, so cached builds are redone.
BUILDER_VERSION = 1
KB_SIZE = 7

_TURN = re.compile(r"(\d+) (.*)")


@dataclass(frozen=True)
class RawDialogue:
    """A GraphDialog dialogue as read: domain, (user, system) pairs, and where it starts."""

    domain: str
    turns: tuple[tuple[str, str], ...]
    line: int


@dataclass(frozen=True)
class BuiltTurn:
    user: str
    response: str
    gold: tuple[str, ...]


@dataclass(frozen=True)
class BuiltDialogue:
    domain: str
    turns: tuple[BuiltTurn, ...]
    kb: tuple[Record, ...]


@dataclass(frozen=True)
class TrainCounts:
    dialogues: int
    turns: int
    turns_with_entities: int
    dialogues_per_domain: Mapping[str, int]
    # Dialogues naming more than KB_SIZE DB entities keep only the first KB_SIZE in their KB.
    kb_truncated: int


@dataclass(frozen=True)
class TrainBuild:
    text: str
    counts: TrainCounts


def train_inputs(paths: DataPaths) -> dict[str, Path]:
    """Every file the build reads, by a name stable across machines (its path under the data dir)."""
    mwoz = paths.data_dir / "mwoz"
    files = {
        "mwoz/graphdialog_nokb_txt/train.txt": mwoz / "graphdialog_nokb_txt" / "train.txt",
        "mwoz/dfnet_txt/global_entities.json": mwoz / "dfnet_txt" / "global_entities.json",
    }
    for domain in DOMAINS:
        files[f"mwoz/multiwoz_db/{domain}_db.json"] = db_file(paths, domain)
    return files


def read_graphdialog(path: Path) -> tuple[RawDialogue, ...]:
    """Dialogues of a GraphDialog MultiWOZ file: ``#domain#``, then ``N user<TAB>system`` lines."""
    require_file(path, "GraphDialog MultiWOZ dialogue file")
    dialogues: list[RawDialogue] = []
    domain: str | None = None
    start = 0
    turns: list[tuple[str, str]] = []

    def close() -> None:
        if domain is not None and not turns:
            raise DataError(path, f"dialogue #{domain}# has no turns", start)
        if domain is not None:
            dialogues.append(RawDialogue(domain, tuple(turns), start))

    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                close()
                domain, turns = None, []
            elif line.startswith("#"):
                if domain is not None:
                    raise DataError(path, "a '#domain#' line inside a dialogue (missing blank line?)", number)
                if len(line) < 3 or not line.endswith("#"):
                    raise DataError(path, f"malformed domain line {line!r}; expected '#domain#'", number)
                domain, start = line.strip("#"), number
            else:
                match = _TURN.fullmatch(line)
                fields = match.group(2).split("\t") if match else []
                if domain is None or match is None or len(fields) != 2:
                    raise DataError(
                        path, "expected 'N user<TAB>system' inside a dialogue opened by '#domain#'", number
                    )
                if int(match.group(1)) != len(turns) + 1:
                    raise DataError(path, f"turn number {match.group(1)}, expected {len(turns) + 1}", number)
                turns.append((fields[0].strip(), fields[1].strip()))
    close()
    return tuple(dialogues)


def load_global_entities(path: Path) -> dict[str, list[str]]:
    require_file(path, "MWOZ global entity list")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()
    ):
        raise DataError(path, "expected a JSON object mapping each slot to a list of strings")
    return {str(slot): list(values) for slot, values in data.items()}


def normalise_dialogue(dialogue: RawDialogue, lexicon: EntityLexicon) -> tuple[BuiltTurn, ...]:
    turns = []
    for user, system in dialogue.turns:
        response = normalise_utterance(system, lexicon)
        turns.append(
            BuiltTurn(normalise_utterance(user, lexicon), response, gold_entities(response, lexicon))
        )
    return tuple(turns)


def condensed_kb(
    turns: Sequence[BuiltTurn], domain_records: Sequence[Record], rng: random.Random
) -> tuple[tuple[Record, ...], bool]:
    """KB_SIZE rows: the domain's records named in the dialogue (first mention first), then random ones,
    shuffled. Returns the rows and whether mentions had to be cut to fit."""
    by_name = {record.fields["name"]: record for record in domain_records}
    mentioned: list[Record] = []
    for turn in turns:
        for token in (*turn.user.split(), *turn.response.split()):
            record = by_name.get(token)
            if record is not None and record not in mentioned:
                mentioned.append(record)
    truncated = len(mentioned) > KB_SIZE
    rows = mentioned[:KB_SIZE]
    others = [record for record in domain_records if record not in rows]
    rows += rng.sample(others, min(KB_SIZE - len(rows), len(others)))
    rng.shuffle(rows)
    return tuple(rows), truncated


def render_kb_row(record: Record) -> list[str]:
    """DF-Net's layout: a values line ending in ``name <name>``, then one triple per attribute."""
    name = record.fields["name"]
    attributes = [(a, v) for a, v in record.fields.items() if a != "name"]
    lines = ["0 " + " ".join([v for _, v in attributes] + ["name", name])]
    lines += [f"0 {name} {attribute} {value}" for attribute, value in attributes]
    return lines


def render_dialogue(dialogue: BuiltDialogue) -> str:
    lines = [f"#{dialogue.domain}#"]
    for record in dialogue.kb:
        lines += render_kb_row(record)
    for number, turn in enumerate(dialogue.turns, start=1):
        lines.append(f"{number} {turn.user}\t{turn.response}\t{list(turn.gold)!r}")
    return "\n".join(lines) + "\n"


def build_train(paths: DataPaths, seed: int = 0) -> TrainBuild:
    """The whole build, in memory; deterministic for given inputs and seed."""
    inputs = train_inputs(paths)
    raw = read_graphdialog(inputs["mwoz/graphdialog_nokb_txt/train.txt"])
    global_entities = load_global_entities(inputs["mwoz/dfnet_txt/global_entities.json"])
    records = load_db_records(paths)
    lexicons = {domain: build_lexicon(global_entities, records, domain) for domain in DOMAINS}
    by_domain = {domain: [r for r in records if r.domain == domain] for domain in DOMAINS}
    rng = random.Random(seed)
    built: list[BuiltDialogue] = []
    truncated = 0
    for dialogue in raw:
        if dialogue.domain == "train":
            continue  # the MWOZ subset has no train-timetable database
        if dialogue.domain not in DOMAINS:
            where = inputs["mwoz/graphdialog_nokb_txt/train.txt"]
            raise DataError(
                where, f"unknown domain #{dialogue.domain}#; expected {DOMAINS} or train", dialogue.line
            )
        turns = normalise_dialogue(dialogue, lexicons[dialogue.domain])
        kb, cut = condensed_kb(turns, by_domain[dialogue.domain], rng)
        truncated += cut
        built.append(BuiltDialogue(dialogue.domain, turns, kb))
    counts = TrainCounts(
        dialogues=len(built),
        turns=sum(len(d.turns) for d in built),
        turns_with_entities=sum(1 for d in built for t in d.turns if t.gold),
        dialogues_per_domain={domain: sum(d.domain == domain for d in built) for domain in DOMAINS},
        kb_truncated=truncated,
    )
    return TrainBuild("\n".join(render_dialogue(d) for d in built), counts)


def build_train_text(paths: DataPaths, seed: int = 0) -> str:
    """The train split's text (no caching)."""
    return build_train(paths, seed).text


def _write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file: write beside it, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train_file_path(paths: DataPaths, seed: int = 0) -> Path:
    return paths.cache_dir / "mwoz" / f"train.seed{seed}.txt"


def manifest_path(paths: DataPaths, seed: int = 0) -> Path:
    return paths.cache_dir / "mwoz" / f"train.seed{seed}.manifest.json"


def _read_manifest(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a missing or damaged manifest just means "rebuild"
    return data if isinstance(data, dict) else None


def _input_hashes(paths: DataPaths) -> dict[str, str]:
    hashes = {}
    for name, path in train_inputs(paths).items():
        hashes[name] = sha256_of(require_file(path, f"MWOZ train build input {name}"))
    return hashes


def ensure_train_file(paths: DataPaths, seed: int = 0) -> Path:
    """The built train file, rebuilt only when an input, the seed or the builder version changed."""
    output = train_file_path(paths, seed)
    manifest_file = manifest_path(paths, seed)
    expected = {"builder_version": BUILDER_VERSION, "seed": seed, "inputs": _input_hashes(paths)}
    manifest = _read_manifest(manifest_file)
    if (
        manifest is not None
        and all(manifest.get(key) == value for key, value in expected.items())
        and output.is_file()
        and manifest.get("output_sha256") == sha256_of(output)
    ):
        return output
    build = build_train(paths, seed)
    _write_atomic(output, build.text)
    record = {**expected, "counts": asdict(build.counts), "output_sha256": sha256_of(output)}
    _write_atomic(manifest_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return output


def read_counts(paths: DataPaths, seed: int = 0) -> TrainCounts:
    """Counts of the cached build (building it first if needed)."""
    ensure_train_file(paths, seed)
    manifest = _read_manifest(manifest_path(paths, seed))
    counts = manifest.get("counts") if manifest else None
    if not isinstance(counts, dict):
        raise DataError(manifest_path(paths, seed), "manifest has no 'counts'; delete it to rebuild")
    return TrainCounts(**counts)
