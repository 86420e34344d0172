from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import API_KEY, make_app

from service import routes_deps

KEY = {"X-API-Key": API_KEY}


def _reply(client: TestClient, text: str) -> str:
    r = client.post("/v1/chat", json={"messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    reply: str = r.json()["reply"]
    return reply


def test_kb_edits_change_the_next_answer(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        assert _reply(client, "where is bramble kitchen ?") == "bramble kitchen is in the north"
        record = client.get("/v1/kb/records/bramble_kitchen").json()
        record["fields"]["area"] = "riverside"
        r = client.put("/v1/kb/records/bramble_kitchen", json={"fields": record["fields"]}, headers=KEY)
        assert r.status_code == 200 and r.json()["kb_version"] == 2
        assert _reply(client, "where is bramble kitchen ?") == "bramble kitchen is in the riverside"

        new = {
            "id": "zephyr_cafe",
            "domain": "restaurant",
            "fields": {"name": "zephyr cafe", "area": "docks"},
        }
        r = client.post("/v1/kb/records", json=new, headers=KEY)
        assert r.status_code == 201
        assert _reply(client, "where is zephyr cafe ?") == "zephyr cafe is in the docks"
        assert client.post("/v1/kb/records", json=new, headers=KEY).status_code == 409

        assert client.delete("/v1/kb/records/zephyr_cafe", headers=KEY).status_code == 200
        assert _reply(client, "where is zephyr cafe ?") != "zephyr cafe is in the docks"
        assert client.delete("/v1/kb/records/zephyr_cafe", headers=KEY).status_code == 404
        assert client.get("/v1/kb/records/zephyr_cafe").status_code == 404
    # The edit persisted and the index is rebuilt from the DB at startup.
    with TestClient(make_app(tmp_path)) as client:
        assert _reply(client, "where is bramble kitchen ?") == "bramble kitchen is in the riverside"
        assert client.get("/readyz").json()["records"] == 12


def test_list_and_search(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        page = client.get("/v1/kb/records", params={"offset": 10, "limit": 5}).json()
        assert page["total"] == 12 and len(page["records"]) == 2
        found = client.get("/v1/kb/records/search", params={"q": "GUESTHOUSE"}).json()["records"]
        assert {r["id"] for r in found} == {"the_quiet_heron", "birchwood_lodge", "copperfield_house"}
        assert client.get("/v1/kb/records", params={"limit": -1}).status_code == 422
        assert client.get("/v1/kb/records/search").status_code == 422


def test_api_key_missing_wrong_and_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(routes_deps.hmac, "compare_digest", spy)
    rec = {"id": "x", "fields": {"name": "x"}}
    with TestClient(make_app(tmp_path)) as client:
        r = client.post("/v1/kb/records", json=rec)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = client.post("/v1/kb/records", json=rec, headers={"X-API-Key": "wrong"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_api_key"
        r = client.delete("/v1/kb/records/x", headers={"X-API-Key": "t\u00e9st".encode()})
        assert r.status_code == 403
        assert client.get("/v1/kb/records/x").status_code == 404  # nothing was written
        assert (b"wrong", API_KEY.encode()) in compared  # the constant-time comparison decided
    with TestClient(make_app(tmp_path / "nokey", api_key=None)) as client:
        r = client.post("/v1/kb/records", json=rec, headers=KEY)
        assert r.status_code == 403 and r.json()["error"]["code"] == "writes_disabled"


def test_import_jsonl_and_csv_all_or_nothing(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        bad = (
            '{"id": "a1", "fields": {"name": "alpha bistro", "area": "west"}}\n'
            "not json\n"
            '{"id": "a2", "fields": {"name": 3}}\n'
            '{"id": "a1", "fields": {"name": "dup"}}\n'
        )
        r = client.post("/v1/kb/import", content=bad, headers={**KEY, "content-type": "application/x-ndjson"})
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "invalid_rows" and [row["row"] for row in err["rows"]] == [2, 3, 4]
        assert client.get("/v1/kb/records/a1").status_code == 404

        csv_body = "id,domain,name,area\nc1,restaurant,cobalt diner,harbour\nc2,hotel,cedar rooms,\n"
        r = client.post("/v1/kb/import", content=csv_body, headers={**KEY, "content-type": "text/csv"})
        assert r.status_code == 200, r.text
        assert r.json()["imported"] == 2
        assert client.get("/v1/kb/records/c2").json()["fields"] == {"name": "cedar rooms"}
        assert _reply(client, "where is cobalt diner ?") == "cobalt diner is in the harbour"

        r = client.post("/v1/kb/import", content=csv_body, headers={**KEY, "content-type": "text/csv"})
        assert r.status_code == 409
        r = client.post("/v1/kb/import", content="name\nx\n", headers={**KEY, "content-type": "text/csv"})
        assert r.status_code == 422 and r.json()["error"]["rows"][0]["row"] == 1
        r = client.post("/v1/kb/import", content="x", headers={**KEY, "content-type": "text/plain"})
        assert r.status_code == 415

        good = '{"id": "only", "fields": {"name": "only one", "area": "moon"}}\n'
        r = client.post(
            "/v1/kb/import?replace=true",
            content=good,
            headers={**KEY, "content-type": "application/x-ndjson"},
        )
        assert r.json()["removed"] == 14
        assert _reply(client, "anything ?") == "only one is in the moon"


def test_hostile_strings_round_trip(tmp_path: Path) -> None:
    hostile = {
        "name": "<script>alert(1)</script>",
        "area": "'; DROP TABLE records; --",
        "notes": 'quote " back\\slash \u2028 line\nbreak \u0000 nul 🍜',
    }
    with TestClient(make_app(tmp_path)) as client:
        r = client.post("/v1/kb/records", json={"id": "evil/../id%20", "fields": hostile}, headers=KEY)
        assert r.status_code == 201
        found = client.get("/v1/kb/records/search", params={"q": "drop table"}).json()["records"]
        assert found[0]["fields"] == hostile
        assert client.get("/readyz").json()["records"] == 13
        r = client.post("/v1/chat", json={"messages": [{"role": "user", "content": hostile["notes"]}]})
        assert r.status_code == 200
        r = client.post("/v1/kb/records", json={"id": "", "fields": {"a": "b"}}, headers=KEY)
        assert r.status_code == 422 and "id" in r.json()["error"]["message"]
        r = client.post("/v1/kb/records", json={"id": "z", "fields": {"a": 1}}, headers=KEY)
        assert r.status_code == 422 and "fields.a" in r.json()["error"]["message"]
