"""The service's SQLite store: round trips, errors, hostile strings, atomic import, durability, threads."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mktod.types import Record
from service.store import Conflict, NotFound, Store, StoreError

REPO = Path(__file__).resolve().parents[2]

HOSTILE = [
    'it\'s "quoted"',
    "'; DROP TABLE records; --",
    "x' OR '1'='1",
    "%_\\ LIKE wildcards",
    "Ünïcödé ÉCOLE ß 東京 🍜",
    "line\u2028sep\u2029para\r\nnext",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state" / "mktod.db")
    yield s
    s.close()


def rec(rid: str, **fields: str) -> Record:
    return Record(id=rid, fields=fields or {"name": rid}, domain="restaurant")


def test_pragmas(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_session_round_trip_and_order(store: Store) -> None:
    sid = store.create_session()
    assert len(sid) == 32 and int(sid, 16) >= 0
    m1 = store.append_message(sid, "user", "hi")
    m2 = store.append_message(sid, "assistant", "hello", records_json=json.dumps([{"id": "r1"}]))
    m3 = store.append_message(sid, "user", "bye")
    assert [m.seq for m in (m1, m2, m3)] == [1, 2, 3]
    history = store.get_session(sid)
    assert history.session_id == sid
    assert history.messages == (m1, m2, m3)
    assert history.messages[1].records_json == '[{"id": "r1"}]'
    other = store.create_session()
    assert store.append_message(other, "user", "x").seq == 1
    store.delete_session(sid)
    with pytest.raises(NotFound, match=sid):
        store.get_session(sid)
    assert len(store.get_session(other).messages) == 1


def test_session_errors(store: Store) -> None:
    for call in (
        lambda: store.get_session("nope"),
        lambda: store.delete_session("nope"),
        lambda: store.append_message("nope", "user", "x"),
    ):
        with pytest.raises(KeyError) as info:
            call()
        assert isinstance(info.value, NotFound) and str(info.value) == "session 'nope' not found"
    sid = store.create_session()
    with pytest.raises(ValueError, match="role"):
        store.append_message(sid, "system", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="records_json"):
        store.append_message(sid, "assistant", "x", records_json="{not json")
    assert store.get_session(sid).messages == ()


def test_record_crud_and_kb_version(store: Store) -> None:
    assert store.kb_version() == 0
    assert store.list_records() == ((), 0)
    a = Record("a", {"name": "jinling", "food": "chinese"}, "restaurant")
    assert store.create_record(a) == 1
    assert store.get_record("a") == a
    assert list(store.get_record("a").fields) == ["name", "food"]  # field order kept
    with pytest.raises(Conflict, match="'a'"):
        store.create_record(a)
    assert store.kb_version() == 1
    b = Record("a", {"name": "jinling", "food": "thai"}, "restaurant")
    assert store.update_record(b) == 2
    assert store.get_record("a") == b
    with pytest.raises(NotFound, match="'zz'"):
        store.update_record(rec("zz"))
    for rid in "bcd":
        store.create_record(rec(rid))
    assert store.kb_version() == 5
    page = store.list_records(offset=1, limit=2)
    assert [r.id for r in page.records] == ["b", "c"] and page.total == 4
    records, total = store.list_records(offset=3, limit=10)
    assert [r.id for r in records] == ["d"] and total == 4
    assert store.delete_record("b") == 6
    with pytest.raises(NotFound, match="'b'"):
        store.get_record("b")
    with pytest.raises(NotFound, match="'b'"):
        store.delete_record("b")
    assert [r.id for r in store.all_records()] == ["a", "c", "d"]
    assert store.kb_version() == 6
    with pytest.raises(ValueError, match="id"):
        store.create_record(Record(" ", {"name": "x"}))
    with pytest.raises(ValueError, match="fields"):
        store.create_record(Record("e", {}))
    assert store.kb_version() == 6


def test_hostile_strings_stored_and_searched_verbatim(store: Store) -> None:
    sid = store.create_session()
    for i, text in enumerate(HOSTILE):
        store.append_message(sid, "user", text)
        store.create_record(Record(f"id {text}", {"name": text, text: f"v{i}"}, domain=text))
    assert [m.text for m in store.get_session(sid).messages] == HOSTILE
    for i, text in enumerate(HOSTILE):
        got = store.get_record(f"id {text}")
        assert got.fields == {"name": text, text: f"v{i}"} and got.domain == text
        hits = store.search_records(text)
        assert [h.id for h in hits] == [f"id {text}"], text
    # Tables survived the injection attempts.
    assert store.list_records().total == len(HOSTILE)


def test_search_case_insensitive_substring(store: Store) -> None:
    store.create_record(Record("R1", {"name": "Jinling Noodle Bar", "area": "centre"}))
    store.create_record(Record("r2", {"name": "ÉCOLE", "area": "north"}))
    store.create_record(Record("r3", {"name": "pizza", "area": "west"}))
    assert [r.id for r in store.search_records("noodle")] == ["R1"]
    assert [r.id for r in store.search_records("r1")] == ["R1"]  # id, case-insensitive
    assert [r.id for r in store.search_records("école")] == ["r2"]  # beyond ASCII
    assert [r.id for r in store.search_records("NORTH")] == ["r2"]
    assert store.search_records("area") == ()  # attribute names are not searched
    assert store.search_records("centrenorth") == ()
    assert store.search_records("%") == () and store.search_records("_") == ()
    assert [r.id for r in store.search_records("r", limit=2)] == ["R1", "r2"]


def test_import_atomic(store: Store) -> None:
    store.create_record(rec("keep"))
    v = store.kb_version()
    good = [rec(f"n{i}") for i in range(5)]
    with pytest.raises(ValueError, match=r"records\[5\]"):
        store.import_records([*good, Record("bad", {})], replace=True)
    with pytest.raises(Conflict, match=r"records\[5\].*'n0'"):
        store.import_records([*good, rec("n0")])
    with pytest.raises(Conflict, match="'keep'"):
        store.import_records([*good, rec("keep")])
    assert [r.id for r in store.all_records()] == ["keep"] and store.kb_version() == v

    result = store.import_records(good)
    assert (result.imported, result.removed, result.kb_version) == (5, 0, v + 1)
    assert store.list_records().total == 6
    result = store.import_records([rec("only")], replace=True)
    assert (result.imported, result.removed, result.kb_version) == (1, 6, v + 2)
    assert [r.id for r in store.all_records()] == ["only"]


def test_reopen_and_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with Store(path) as s:
        sid = s.create_session()
        s.create_record(rec("a"))
    with Store(path) as s:
        assert s.get_session(sid).session_id == sid and s.kb_version() == 1
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


@pytest.mark.parametrize("death", ["exit", "sigkill"])
def test_acknowledged_write_survives_crash(tmp_path: Path, death: str) -> None:
    path = tmp_path / "state" / "db.sqlite"
    kill = "os._exit(0)" if death == "exit" else "os.kill(os.getpid(), signal.SIGKILL)"
    script = f"""
import os, signal, sys
from mktod.types import Record
from service.store import Store
s = Store(sys.argv[1])
sid = s.create_session()
s.append_message(sid, "user", "persist me")
s.create_record(Record("r", {{"name": "x"}}))
print(sid, flush=True)
{kill}
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    expected_rc = 0 if death == "exit" else -signal.SIGKILL
    assert proc.returncode == expected_rc, proc.stderr
    sid = proc.stdout.strip()
    with Store(path) as s:
        assert [m.text for m in s.get_session(sid).messages] == ["persist me"]
        assert s.get_record("r").fields == {"name": "x"} and s.kb_version() == 1


def test_concurrent_appends(store: Store) -> None:
    sessions = [store.create_session() for _ in range(3)]
    per_thread = 50
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(per_thread):
                store.append_message(sessions[i % 3], "user", f"{t}:{i}")
                if i % 10 == 0:
                    store.get_session(sessions[t % 3])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    total = 0
    for sid in sessions:
        messages = store.get_session(sid).messages
        assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
        total += len(messages)
        # Each thread's own messages keep the order it wrote them in.
        for t in range(8):
            mine = [int(m.text.split(":")[1]) for m in messages if m.text.startswith(f"{t}:")]
            assert mine == sorted(mine)
    assert total == 8 * per_thread
