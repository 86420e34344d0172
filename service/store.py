"""Persistence for the dialogue service: sessions, their messages, and the editable KB, in one SQLite file.

Durability: the database runs in WAL mode with ``synchronous=FULL`` and every write method returns only
after its transaction has committed, so an acknowledged write survives a process crash or power loss.

Threads: one connection guarded by one lock. The service calls these blocking methods from a thread pool;
SQLite serialises writers anyway, and the KB and session tables are small, so a lock costs little and
makes per-session sequence numbers and ``kb_version`` bumps trivially race-free. Other *processes* may
open the same file: ``BEGIN IMMEDIATE`` plus a busy timeout makes them queue rather than fail.

The KB version is a counter stored in the database and bumped inside every transaction that changes
the KB, so after a crash the service compares it with the version its FAISS index was built from and
rebuilds the index from :meth:`Store.all_records` when they differ.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from mktod.errors import MktodError
from mktod.kb import record_from_json, record_to_json
from mktod.types import Record

SCHEMA_VERSION = 1
Role = Literal["user", "assistant"]
_ROLES = ("user", "assistant")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text TEXT NOT NULL,
    records_json TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    fields TEXT NOT NULL
);
"""


class StoreError(MktodError):
    """The state database cannot be used (e.g. written by a newer version)."""


class NotFound(StoreError, KeyError):
    """No session or record with the given id."""

    def __str__(self) -> str:
        # KeyError's __str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class Conflict(StoreError):
    """A record with that id already exists."""


class InvalidRecord(StoreError, ValueError):
    """A record a KB file could not hold either (e.g. a blank id or attribute name)."""


@dataclass(frozen=True)
class Message:
    session_id: str
    seq: int
    role: Role
    text: str
    records_json: str | None
    created_at: float


@dataclass(frozen=True)
class SessionHistory:
    session_id: str
    created_at: float
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class ImportResult:
    """``removed`` counts records dropped by ``replace=True``; ``kb_version`` is the version after import."""

    imported: int
    removed: int
    kb_version: int


class RecordPage(NamedTuple):
    records: tuple[Record, ...]
    total: int


# Ids the REST API (/v1/kb/records/{id}) could store but never address: "." and ".." are dot segments,
# which HTTP clients and proxies remove from a path even when the id is percent-encoded (a "/" inside an
# id is fine: encoded as %2F it stays one segment), and /v1/kb/records/search is the search endpoint.
_UNADDRESSABLE_IDS = frozenset({".", "..", "search"})


def _validated(record: Record, where: str) -> Record:
    # Reuse the KB file's validation so the DB never holds a record a KB file could not.
    try:
        record = record_from_json(record_to_json(record), where)
    except ValueError as exc:
        raise InvalidRecord(str(exc)) from None
    # Refused when written rather than stored and then unreachable.
    if record.id in _UNADDRESSABLE_IDS:
        raise InvalidRecord(
            f"{where}: 'id' {record.id!r} cannot be addressed in a URL (/v1/kb/records/{{id}}); "
            "choose another id"
        )
    return record


def _row_to_record(row: sqlite3.Row) -> Record:
    return Record(id=row["id"], fields=json.loads(row["fields"]), domain=row["domain"])


class Store:
    """The service's state database at ``path`` (created, with its parent directory, if missing)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so a transaction spans exactly one call.
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        # Case-insensitive search must work beyond ASCII, which SQLite's lower()/LIKE do not.
        self._conn.create_function("casefold", 1, _casefold, deterministic=True)
        self._conn.create_function("value_contains", 2, _value_contains, deterministic=True)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        with self._tx() as cur:
            # Not executescript: it would commit first and leave the version check outside the transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            row = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0]
            if version is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                cur.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('kb_version', 0)")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema version {version} is newer than this code supports "
                    f"({SCHEMA_VERSION}); upgrade mktod or point the service at another state directory"
                )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        """One transaction under the lock; commits on success (returns only after commit), else rolls back."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    # -- sessions ---------------------------------------------------------------------------------

    def create_session(self) -> str:
        session_id = uuid.uuid4().hex
        with self._tx() as cur:
            cur.execute("INSERT INTO sessions (id, created_at) VALUES (?, ?)", (session_id, time.time()))
        return session_id

    def append_message(
        self, session_id: str, role: Role, text: str, records_json: str | None = None
    ) -> Message:
        return self.append_messages(session_id, [(role, text, records_json)])[0]

    def append_messages(
        self, session_id: str, messages: Sequence[tuple[Role, str, str | None]]
    ) -> tuple[Message, ...]:
        """Append ``(role, text, records_json)`` messages in one transaction: all are stored or none, so a
        crash between a user message and its reply cannot leave half a turn behind."""
        for role, _, records_json in messages:
            if role not in _ROLES:
                raise ValueError(f"message role must be 'user' or 'assistant', got {role!r}")
            if records_json is not None:
                try:
                    json.loads(records_json)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"records_json is not valid JSON ({exc.msg})") from None
        stored: list[Message] = []
        with self._tx() as cur:
            _require_session(cur, session_id)
            row = cur.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?", (session_id,)
            ).fetchone()
            for seq, (role, text, records_json) in enumerate(messages, start=int(row[0])):
                message = Message(session_id, seq, role, text, records_json, time.time())
                cur.execute(
                    "INSERT INTO messages (session_id, seq, role, text, records_json, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (session_id, seq, role, text, records_json, message.created_at),
                )
                stored.append(message)
        return tuple(stored)

    def get_session(self, session_id: str) -> SessionHistory:
        with self._tx(write=False) as cur:
            created_at = _require_session(cur, session_id)
            rows = cur.execute(
                "SELECT seq, role, text, records_json, created_at FROM messages"
                " WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
        messages = tuple(
            Message(session_id, r["seq"], r["role"], r["text"], r["records_json"], r["created_at"])
            for r in rows
        )
        return SessionHistory(session_id, created_at, messages)

    def delete_session(self, session_id: str) -> None:
        with self._tx() as cur:
            if cur.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 0:
                raise NotFound(f"session {session_id!r} not found")

    # -- KB records -------------------------------------------------------------------------------

    def kb_version(self) -> int:
        with self._tx(write=False) as cur:
            return int(cur.execute("SELECT value FROM meta WHERE key = 'kb_version'").fetchone()[0])

    def list_records(self, offset: int = 0, limit: int = 50) -> RecordPage:
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must be >= 0, got offset={offset}, limit={limit}")
        with self._tx(write=False) as cur:
            total = int(cur.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            rows = cur.execute(
                "SELECT id, domain, fields FROM records ORDER BY rowid LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return RecordPage(tuple(_row_to_record(r) for r in rows), total)

    def search_records(self, query: str, limit: int = 50) -> tuple[Record, ...]:
        """Records whose id or any single value contains ``query``, case-insensitively, in KB order."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        needle = query.casefold()
        with self._tx(write=False) as cur:
            rows = cur.execute(
                "SELECT id, domain, fields FROM records WHERE instr(casefold(id), :q) > 0"
                " OR value_contains(fields, :q)"
                " ORDER BY rowid LIMIT :limit",
                {"q": needle, "limit": limit},
            ).fetchall()
        return tuple(_row_to_record(r) for r in rows)

    def get_record(self, record_id: str) -> Record:
        with self._tx(write=False) as cur:
            row = cur.execute("SELECT id, domain, fields FROM records WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise NotFound(f"record {record_id!r} not found")
        return _row_to_record(row)

    def all_records(self) -> tuple[Record, ...]:
        with self._tx(write=False) as cur:
            rows = cur.execute("SELECT id, domain, fields FROM records ORDER BY rowid").fetchall()
        return tuple(_row_to_record(r) for r in rows)

    def create_record(self, record: Record) -> int:
        """Add a record; returns the new KB version."""
        record = _validated(record, "record")
        with self._tx() as cur:
            _insert_record(cur, record)
            return _bump(cur)

    def update_record(self, record: Record) -> int:
        """Replace the record with ``record.id``; returns the new KB version."""
        record = _validated(record, "record")
        with self._tx() as cur:
            updated = cur.execute(
                "UPDATE records SET domain = ?, fields = ? WHERE id = ?",
                (record.domain, _fields_json(record), record.id),
            ).rowcount
            if updated == 0:
                raise NotFound(f"record {record.id!r} not found")
            return _bump(cur)

    def delete_record(self, record_id: str) -> int:
        """Remove a record; returns the new KB version."""
        with self._tx() as cur:
            if cur.execute("DELETE FROM records WHERE id = ?", (record_id,)).rowcount == 0:
                raise NotFound(f"record {record_id!r} not found")
            return _bump(cur)

    def import_records(self, records: Iterable[Record], replace: bool = False) -> ImportResult:
        """Add many records in one transaction: all are stored or none is.

        ``replace=True`` makes the KB exactly ``records``; ``replace=False`` adds them, and an id that
        already exists (or repeats within ``records``) raises :class:`Conflict`.
        """
        batch = [_validated(r, f"records[{i}]") for i, r in enumerate(records)]
        with self._tx() as cur:
            removed = cur.execute("DELETE FROM records").rowcount if replace else 0
            for i, record in enumerate(batch):
                _insert_record(cur, record, where=f"records[{i}]: ")
            version = _bump(cur)
        return ImportResult(imported=len(batch), removed=removed, kb_version=version)


def _casefold(value: object) -> str | None:
    return value.casefold() if isinstance(value, str) else None


def _value_contains(fields_json: object, needle: object) -> bool:
    """Whether a value of the record's ``fields`` JSON contains ``needle`` (already casefolded).

    Decoded here, not with SQLite's ``json_each``: that cuts a string at an escaped NUL (\\u0000), so
    text after a NUL byte could never be found.
    """
    if not isinstance(fields_json, str) or not isinstance(needle, str):
        return False
    fields: dict[str, str] = json.loads(fields_json)
    return any(needle in value.casefold() for value in fields.values())


def _require_session(cur: sqlite3.Cursor, session_id: str) -> float:
    row = cur.execute("SELECT created_at FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise NotFound(f"session {session_id!r} not found")
    return float(row[0])


def _fields_json(record: Record) -> str:
    return json.dumps(dict(record.fields), ensure_ascii=False)


def _insert_record(cur: sqlite3.Cursor, record: Record, where: str = "") -> None:
    try:
        cur.execute(
            "INSERT INTO records (id, domain, fields) VALUES (?, ?, ?)",
            (record.id, record.domain, _fields_json(record)),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"{where}record {record.id!r} already exists; update it or delete it first") from None


def _bump(cur: sqlite3.Cursor) -> int:
    row = cur.execute("UPDATE meta SET value = value + 1 WHERE key = 'kb_version' RETURNING value").fetchone()
    return int(row[0])
