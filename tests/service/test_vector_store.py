"""Record embeddings persisted across restarts: reused when they fit the encoder, ignored otherwise,
and never a source of truth (the index is rebuilt from the database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from retriever_helpers import tiny_encoder
from service_helpers import TopRecordGenerator, make_settings

from mktod.meta import MetaConfig
from mktod.pipeline import Pipeline, PipelineConfig
from mktod.retriever import Retriever
from mktod.types import Record, Utterance
from service import vector_store
from service.metrics import Metrics
from service.routes_deps import Engine
from service.store import Store

RECORDS = (
    Record("a", {"name": "bramble kitchen", "area": "north"}),
    Record("b", {"name": "lantern noodle house", "area": "centre"}),
    Record("c", {"name": "saffron terrace", "area": "east"}),
)


def engine(state: Path, store: Store, seed: int = 0) -> Engine:
    pipeline = Pipeline(
        Retriever(tiny_encoder(seed)), TopRecordGenerator(), MetaConfig(), PipelineConfig(k=2)
    )
    return Engine(make_settings(state), store, pipeline, Metrics())  # type: ignore[arg-type]


def embedded(eng: Engine) -> int:
    for line in eng.metrics.render().splitlines():
        if line.startswith("mktod_index_records_embedded_total "):
            return int(float(line.split()[1]))
    return 0


def test_a_restart_reuses_saved_embeddings_and_re_embeds_only_edits(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    for r in RECORDS:
        store.create_record(r)
    first = engine(tmp_path, store)
    assert not first.load_vectors()  # nothing saved yet
    first.sync_index()
    assert embedded(first) == 3 and (tmp_path / "index" / vector_store.FILE).is_file()

    store.update_record(Record("b", {"name": "lantern noodle house", "area": "north"}))
    second = engine(tmp_path, store)  # a new process: same encoder weights
    assert second.load_vectors()
    second.sync_index()
    assert embedded(second) == 1  # only the edited record
    reply = second.respond([Utterance("user", "lantern noodle house")])
    assert reply.records[0].record.id == "b" and "north" in reply.text  # the database's value


def test_embeddings_of_another_encoder_or_a_damaged_file_are_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    for r in RECORDS:
        store.create_record(r)
    engine(tmp_path, store).sync_index()
    other = engine(tmp_path, store, seed=1)  # a retrained encoder
    assert not other.load_vectors()
    other.sync_index()
    assert embedded(other) == 3

    (tmp_path / "index" / vector_store.FILE).write_bytes(b"not an npz file")
    damaged = engine(tmp_path, store)
    assert not damaged.load_vectors()
    damaged.sync_index()
    assert embedded(damaged) == 3


def test_saved_file_round_trips_without_pickle(tmp_path: Path) -> None:
    import numpy as np

    texts = ["name x ; area <script>", "ünïcode \x00 nul", ""]
    vectors = np.arange(9, dtype=np.float32).reshape(3, 3)
    vector_store.save(tmp_path, texts, vectors)
    loaded = vector_store.load(tmp_path)
    assert loaded is not None
    assert loaded[0] == texts and np.array_equal(loaded[1], vectors)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_unreadable_file_loads_as_nothing(tmp_path: Path, content: bytes) -> None:
    (tmp_path / vector_store.FILE).write_bytes(content)
    assert vector_store.load(tmp_path) is None
