"""Crash safety against a real server process: SIGKILL right after acknowledgements and in a write burst.

Every write the server acknowledged (2xx) must be there when a new process opens the same state
directory, the first reply after the restart must already use the edited KB, and a session turn (user
message plus reply) is stored whole or not at all.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from fixture_server import ServerProcess
from service_helpers import API_KEY, make_app

KEY = {"X-API-Key": API_KEY}
StartServer = Callable[[], ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Starts fixture servers on one state directory; whatever is still running is killed at teardown."""
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        server = ServerProcess(tmp_path / "state", tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.kill()


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=30.0)


def _ok(r: httpx.Response, status: int = 200) -> httpx.Response:
    assert r.status_code == status, f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}"
    return r


def _reply(client: httpx.Client, text: str) -> str:
    r = _ok(client.post("/v1/chat", json={"messages": [{"role": "user", "content": text}]}))
    reply: str = r.json()["reply"]
    return reply


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(start_server: StartServer) -> None:
    first = start_server()
    with _client(first) as client:
        sid = _ok(client.post("/v1/sessions"), 201).json()["id"]
        said = ["where is kitsune sushi bar ?", "and its phone ?"]
        replies = [_ok(client.post(f"/v1/sessions/{sid}/messages", json={"text": t})).json() for t in said]
        fields = _ok(client.get("/v1/kb/records/bramble_kitchen")).json()["fields"]
        edited = {**fields, "area": "riverside"}
        _ok(client.put("/v1/kb/records/bramble_kitchen", json={"fields": edited}, headers=KEY))
        new = {
            "id": "zephyr_cafe",
            "domain": "restaurant",
            "fields": {"name": "zephyr cafe", "area": "docks"},
        }
        _ok(client.post("/v1/kb/records", json=new, headers=KEY), 201)
        assert _ok(client.delete("/v1/kb/records/saffron_terrace", headers=KEY)).json() == {"kb_version": 4}
    first.kill()  # straight after the last acknowledgement: no graceful shutdown, no lifespan exit

    second = start_server()
    with _client(second) as client:
        assert _ok(client.get("/readyz")).json() == {"status": "ready", "kb_version": 4, "records": 12}
        messages = _ok(client.get(f"/v1/sessions/{sid}")).json()["messages"]
        assert [(m["seq"], m["role"], m["text"]) for m in messages] == [
            (1, "user", said[0]),
            (2, "assistant", replies[0]["reply"]),
            (3, "user", said[1]),
            (4, "assistant", replies[1]["reply"]),
        ]
        assert messages[1]["records"] == replies[0]["records"]
        assert _ok(client.get("/v1/kb/records/bramble_kitchen")).json()["fields"] == edited
        assert _ok(client.get("/v1/kb/records/zephyr_cafe")).json() == new
        assert client.get("/v1/kb/records/saffron_terrace").status_code == 404
        # The first replies of the new process come from the edited KB: the index was rebuilt at startup.
        assert _reply(client, "where is bramble kitchen ?") == "bramble kitchen is in the riverside"
        assert _reply(client, "where is zephyr cafe ?") == "zephyr cafe is in the docks"
        assert _reply(client, "where is saffron terrace ?") != "saffron terrace is in the east"
        # The restored session goes on where it stopped.
        _ok(client.post(f"/v1/sessions/{sid}/messages", json={"text": "thanks"}))
        assert [m["seq"] for m in _ok(client.get(f"/v1/sessions/{sid}")).json()["messages"]] == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]


@dataclass
class _Worker:
    """One writer thread with its own session and records, noting which of its writes were acknowledged.

    Round ``j`` creates record ``kite{index}q{j}``, then updates its area, then asks the session about it.
    """

    index: int
    session_id: str
    said: list[tuple[str, str]] = field(default_factory=list)  # acknowledged (user text, reply)
    created: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    in_flight_text: str | None = None  # the message being sent when the server died, if any
    stopped_by: str = ""

    def fields(self, j: int, stage: str) -> dict[str, str]:
        # One token per name, so the frequency retriever finds exactly this record by it.
        return {"name": f"kite{self.index}q{j}", "area": f"{stage}{self.index}q{j}"}

    def run(self, base_url: str, acks: list[int], lock: threading.Lock) -> None:
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            j = 0
            try:
                while True:
                    rid = f"kite{self.index}q{j}"
                    body = {"id": rid, "fields": self.fields(j, "old")}
                    if client.post("/v1/kb/records", json=body, headers=KEY).status_code == 201:
                        self.created.add(rid)
                    body = {"fields": self.fields(j, "new")}
                    if client.put(f"/v1/kb/records/{rid}", json=body, headers=KEY).status_code == 200:
                        self.updated.add(rid)
                    self.in_flight_text = f"where is {rid} ?"
                    body = {"text": self.in_flight_text}
                    r = client.post(f"/v1/sessions/{self.session_id}/messages", json=body)
                    if r.status_code == 200:
                        self.said.append((self.in_flight_text, r.json()["reply"]))
                    self.in_flight_text = None
                    with lock:
                        acks[0] += 3
                    j += 1
            except httpx.TransportError as exc:
                # The server was killed: requests in flight fail, and so does every later one.
                self.stopped_by = type(exc).__name__


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill_during_a_burst(start_server: StartServer) -> None:
    first = start_server()
    with _client(first) as client:
        workers = [_Worker(i, _ok(client.post("/v1/sessions"), 201).json()["id"]) for i in range(6)]
    acks, lock = [0], threading.Lock()
    threads = [threading.Thread(target=w.run, args=(first.base_url, acks, lock)) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while acks[0] < 60 and time.monotonic() < deadline and all(t.is_alive() for t in threads):
        time.sleep(0.01)
    first.kill()  # the writers are still going: some requests are in flight right now
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert all(w.stopped_by for w in workers), "every writer should run until the server dies"
    assert sum(len(w.created) for w in workers) >= 6, first.log()

    second = start_server()
    with _client(second) as client:
        acked_kb_writes = sum(len(w.created) + len(w.updated) for w in workers)
        assert _ok(client.get("/readyz")).json()["kb_version"] >= 1 + acked_kb_writes
        for w in workers:
            for rid in w.created:
                j = int(rid.rsplit("q", 1)[1])
                stored = _ok(client.get(f"/v1/kb/records/{rid}")).json()["fields"]
                # An update in flight at the kill may or may not have committed; an acknowledged one has.
                new = w.fields(j, "new")
                assert stored in ([new] if rid in w.updated else [w.fields(j, "old"), new])
            messages = _ok(client.get(f"/v1/sessions/{w.session_id}")).json()["messages"]
            turns = [(u["text"], a["text"]) for u, a in zip(messages[::2], messages[1::2], strict=False)]
            assert turns[: len(w.said)] == w.said
            # After the acknowledged turns there is at most the turn that was in flight, and never half of it.
            rest = [(m["role"], m["text"]) for m in messages[2 * len(w.said) :]]
            assert [role for role, _ in rest] in ([], ["user", "assistant"])
            assert not rest or rest[0][1] == w.in_flight_text
        # The first reply of the new process already uses a record edited during the burst.
        w = next(w for w in workers if w.updated)
        rid = min(w.updated)
        j = int(rid.rsplit("q", 1)[1])
        assert _reply(client, f"where is {rid} ?") == f"{rid} is in the new{w.index}q{j}"


def test_a_turn_is_stored_whole_or_not_at_all(tmp_path: Path) -> None:
    # Regression: the user message and its reply were two transactions, so a crash in between left an
    # unanswered message that every later turn would read. A trigger makes the second insert fail.
    app = make_app(tmp_path)
    with (
        TestClient(app, raise_server_exceptions=False) as client,
        closing(sqlite3.connect(tmp_path / "service.sqlite3")) as db,
    ):
        sid = client.post("/v1/sessions").json()["id"]
        db.execute(
            "CREATE TRIGGER no_replies BEFORE INSERT ON messages WHEN NEW.role = 'assistant'"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        db.commit()
        r = client.post(f"/v1/sessions/{sid}/messages", json={"text": "where is bramble kitchen ?"})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert client.get(f"/v1/sessions/{sid}").json()["messages"] == []
        db.execute("DROP TRIGGER no_replies")
        db.commit()
        _ok(client.post(f"/v1/sessions/{sid}/messages", json={"text": "where is bramble kitchen ?"}))
        assert [m["role"] for m in client.get(f"/v1/sessions/{sid}").json()["messages"]] == [
            "user",
            "assistant",
        ]
