from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from service_helpers import make_app


def test_session_round_trip_survives_restart(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        r = client.post("/v1/sessions")
        assert r.status_code == 201
        sid = r.json()["id"]
        r = client.post(f"/v1/sessions/{sid}/messages", json={"text": "where is kitsune sushi bar ?"})
        assert r.status_code == 200 and r.json()["reply"] == "kitsune sushi bar is in the centre"
        client.post(f"/v1/sessions/{sid}/messages", json={"text": "and its phone ?"})
    with TestClient(make_app(tmp_path)) as client:
        history = client.get(f"/v1/sessions/{sid}").json()
        assert history["id"] == sid
        roles = [m["role"] for m in history["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert history["messages"][0]["records"] is None
        assistant = history["messages"][1]
        assert assistant["text"] == "kitsune sushi bar is in the centre"
        assert assistant["records"][0]["id"] == "kitsune_sushi_bar"
        assert set(assistant["records"][0]["tags"]) == {"order", "confidence", "cooccurrence"}
        # The follow-up was answered with the earlier turns as context.
        assert history["messages"][3]["text"] == "kitsune sushi bar is in the centre"
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204
        r = client.get(f"/v1/sessions/{sid}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_unknown_session_and_bad_message(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, max_message_chars=10)) as client:
        for method, path in (("post", "/v1/sessions/nope/messages"), ("delete", "/v1/sessions/nope")):
            r = client.request(method, path, json={"text": "hi"})
            assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
        sid = client.post("/v1/sessions").json()["id"]
        r = client.post(f"/v1/sessions/{sid}/messages", json={"text": "x" * 11})
        assert r.status_code == 422 and r.json()["error"]["code"] == "message_too_long"
        r = client.post(f"/v1/sessions/{sid}/messages", json={"txt": "hi"})
        assert r.status_code == 422 and "text" in r.json()["error"]["message"]
        assert client.get(f"/v1/sessions/{sid}").json()["messages"] == []


def test_reads_can_need_the_key(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, reads_need_key=True)) as client:
        assert client.post("/v1/sessions").status_code == 401
        assert client.get("/v1/kb/records").status_code == 401
        ok = client.post("/v1/sessions", headers={"X-API-Key": "test-key-0123456789"})
        assert ok.status_code == 201
