"""Hostile and malformed input on every route: bad JSON, oversized and mistyped bodies, unknown ids, bad
keys, and hostile KB strings that must round-trip byte for byte. Nothing bad may be written, nothing 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from fixture_server import serve_in_thread
from service_helpers import API_KEY, make_app

KEY = {"X-API-Key": API_KEY}
JSON = {"content-type": "application/json"}
RECORD = {"id": "probe", "fields": {"name": "probe"}}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path)) as c:
        yield c


def _unchanged(client: TestClient, session_id: str | None = None) -> None:
    """The seeded KB (version 1, 12 records) and, if given, an empty session: nothing was written."""
    assert client.get("/readyz").json() == {"status": "ready", "kb_version": 1, "records": 12}
    assert client.get("/v1/kb/records/bramble_kitchen").json()["fields"]["area"] == "north"
    if session_id is not None:
        assert client.get(f"/v1/sessions/{session_id}").json()["messages"] == []


def _json_routes(client: TestClient) -> tuple[str, list[tuple[str, str]]]:
    sid: str = client.post("/v1/sessions").json()["id"]
    routes = [
        ("POST", "/v1/chat"),
        ("POST", "/v1/chat/completions"),
        ("POST", f"/v1/sessions/{sid}/messages"),
        ("POST", "/v1/kb/records"),
        ("PUT", "/v1/kb/records/bramble_kitchen"),
    ]
    return sid, routes


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"text": "cut', 400, "malformed_json"),
        (b"\xff\xfe{}", 400, "malformed_json"),
        (b'{"text": "\xff"}', 400, "bad_request"),  # valid JSON syntax, not UTF-8
        (b"[]", 422, "invalid_request"),
        (b"null", 422, "invalid_request"),
        (b'"x"', 422, "invalid_request"),
        (b"42", 422, "invalid_request"),
        (b"", 422, "invalid_request"),
    ],
)
def test_malformed_and_non_object_json(client: TestClient, body: bytes, status: int, code: str) -> None:
    sid, routes = _json_routes(client)
    for method, path in routes:
        r = client.request(method, path, content=body, headers={**KEY, **JSON})
        assert r.status_code == status, (method, path, r.text)
        assert r.json()["error"]["code"] == code
    _unchanged(client, sid)


def test_openapi_documents_400_and_422_for_json_bodies(client: TestClient) -> None:
    # Regression: the JSON routes answered malformed bodies with an undocumented 400 (found by schemathesis).
    paths = client.get("/openapi.json").json()["paths"]
    for path, ops in paths.items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                assert {"400", "413", "422"} <= set(op["responses"]), f"{method.upper()} {path}"


def test_body_size_limit_is_exact_and_covers_every_write(tmp_path: Path) -> None:
    limit = 300
    with TestClient(make_app(tmp_path, max_body_bytes=limit)) as client:
        sid = client.post("/v1/sessions").json()["id"]
        path = f"/v1/sessions/{sid}/messages"
        frame = len(b'{"text": "where is bramble kitchen ?"}')

        def message(size: int) -> bytes:
            return b'{"text": "where is bramble kitchen ?' + b" " * (size - frame) + b'"}'

        r = client.post(path, content=message(limit + 1), headers=JSON)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        assert client.get(f"/v1/sessions/{sid}").json()["messages"] == []
        assert client.post(path, content=message(limit), headers=JSON).status_code == 200

        big = {"id": "big", "fields": {"name": "x" * limit}}
        assert client.post("/v1/kb/records", json=big, headers=KEY).status_code == 413
        r = client.put("/v1/kb/records/bramble_kitchen", json={"fields": big["fields"]}, headers=KEY)
        assert r.status_code == 413
        line = b'{"id": "i", "fields": {"name": "n"}}\n'

        def chunks() -> Iterator[bytes]:
            for n in range(limit // len(line) + 1):
                yield line.replace(b'"i"', f'"i{n}"'.encode())

        ndjson = {**KEY, "content-type": "application/x-ndjson"}
        r = client.post("/v1/kb/import?replace=true", content=chunks(), headers=ndjson)
        assert r.status_code == 413
        assert client.get("/readyz").json() == {"status": "ready", "kb_version": 1, "records": 12}
        assert client.get("/v1/kb/records/big").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "where"),
    [
        ("POST", "/v1/kb/records", {"id": 5, "fields": {"a": "b"}}, "body.id"),
        ("POST", "/v1/kb/records", {"id": "x", "fields": ["a", "b"]}, "body.fields"),
        ("POST", "/v1/kb/records", {"id": "x", "fields": "a=b"}, "body.fields"),
        ("POST", "/v1/kb/records", {"id": "x", "fields": {}}, "body.fields"),
        ("POST", "/v1/kb/records", {"id": "x", "fields": {"a": None}}, "body.fields.a"),
        ("POST", "/v1/kb/records", {"id": "x", "domain": None, "fields": {"a": "b"}}, "body.domain"),
        ("POST", "/v1/kb/records", {"id": "x", "fields": {"a": "b"}, "score": 1}, "body.score"),
        ("PUT", "/v1/kb/records/bramble_kitchen", {"fields": {"area": 7}}, "body.fields.area"),
        ("PUT", "/v1/kb/records/bramble_kitchen", {"id": "other", "fields": {"a": "b"}}, "body.id"),
        ("POST", "/v1/sessions/{sid}/messages", {"text": None}, "body.text"),
        ("POST", "/v1/sessions/{sid}/messages", {"text": ["hi"]}, "body.text"),
        ("POST", "/v1/sessions/{sid}/messages", {"text": "hi", "role": "user"}, "body.role"),
        (
            "POST",
            "/v1/chat/completions",
            {"model": 1, "messages": [{"role": "user", "content": "hi"}]},
            "model",
        ),
        ("POST", "/v1/chat/completions", {"model": "m", "messages": "hi"}, "body.messages"),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "role",
        ),
        ("GET", "/v1/kb/records?limit=ten", None, "query.limit"),
        ("GET", "/v1/kb/records?offset=1.5", None, "query.offset"),
        ("GET", "/v1/kb/records?limit=501", None, "query.limit"),
        ("GET", "/v1/kb/records/search?q=" + "q" * 201, None, "query.q"),
        ("GET", "/v1/kb/records/search?q=", None, "query.q"),
        ("POST", "/v1/kb/import?replace=maybe", None, "query.replace"),
    ],
)
def test_wrong_types_are_422_naming_the_field(
    client: TestClient, method: str, path: str, body: object, where: str
) -> None:
    sid = client.post("/v1/sessions").json()["id"]
    r = client.request(method, path.replace("{sid}", sid), json=body, headers=KEY)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request" and where in r.json()["error"]["message"]
    _unchanged(client, sid)


def test_unknown_ids_are_404_and_create_nothing(client: TestClient) -> None:
    r = client.put("/v1/kb/records/nope", json={"fields": {"name": "nope"}}, headers=KEY)
    assert r.status_code == 404 and r.json()["error"] == {
        "code": "not_found",
        "message": "record 'nope' not found",
    }
    assert client.get("/v1/kb/records/nope").status_code == 404
    r = client.get("/v1/sessions/0123456789abcdef0123456789abcdef")
    assert r.status_code == 404 and "0123456789abcdef" in r.json()["error"]["message"]
    sid = client.post("/v1/sessions").json()["id"]
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    assert client.post(f"/v1/sessions/{sid}/messages", json={"text": "hi"}).status_code == 404
    assert client.get(f"/v1/sessions/{sid}").status_code == 404
    _unchanged(client)


def test_blank_ids_and_attribute_names_are_422_not_500(client: TestClient) -> None:
    # Regression: the store's own validation raised ValueError, answered as a 500 (found by schemathesis).
    writes = [
        ("POST", "/v1/kb/records", {"id": " \t", "fields": {"name": "x"}}, "'id'"),
        ("POST", "/v1/kb/records", {"id": "x", "fields": {"": "x"}}, "attribute names"),
        ("POST", "/v1/kb/records", {"id": "x", "fields": {"name": "x", "  ": "y"}}, "attribute names"),
        ("PUT", "/v1/kb/records/%20", {"fields": {"name": "x"}}, "'id'"),
        ("PUT", "/v1/kb/records/bramble_kitchen", {"fields": {"": "x"}}, "attribute names"),
    ]
    for method, path, body, what in writes:
        r = client.request(method, path, json=body, headers=KEY)
        assert r.status_code == 422, (method, path, r.text)
        assert r.json()["error"]["code"] == "invalid_record" and what in r.json()["error"]["message"]
    _unchanged(client)


@pytest.mark.parametrize("record_id", ["..", ".", "search"])
def test_ids_a_url_cannot_address_are_refused_on_every_write(client: TestClient, record_id: str) -> None:
    # Regression: "." and ".." were stored, then unreachable (clients remove dot segments even when
    # percent-encoded), and "search" was shadowed by GET /v1/kb/records/search.
    r = client.post("/v1/kb/records", json={"id": record_id, "fields": {"name": "x"}}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_record", r.text
    assert repr(record_id) in r.json()["error"]["message"]
    line = json.dumps({"id": record_id, "fields": {"name": "x"}})
    r = client.post("/v1/kb/import", content=line, headers={**KEY, "content-type": "application/x-ndjson"})
    assert r.status_code == 422, r.text
    assert repr(record_id) in r.text
    _unchanged(client)


def test_ids_that_only_look_like_dot_segments_are_fine(client: TestClient) -> None:
    for record_id in ("a.b", "...", "restaurant/.hidden", "search2", "search/x"):
        r = client.post("/v1/kb/records", json={"id": record_id, "fields": {"name": "x"}}, headers=KEY)
        assert r.status_code == 201, (record_id, r.text)
        assert client.get(f"/v1/kb/records/{quote(record_id, safe='/')}").json()["id"] == record_id


def test_offset_beyond_sqlite_integers_is_422_not_500(client: TestClient) -> None:
    # Regression: an offset past 2**63 - 1 overflowed in the SQLite driver (found by schemathesis).
    r = client.get("/v1/kb/records", params={"offset": 2**63})
    assert r.status_code == 422 and "query.offset" in r.json()["error"]["message"]
    page = client.get("/v1/kb/records", params={"offset": 2**63 - 1}).json()
    assert page["records"] == [] and page["total"] == 12


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong"},
        {"X-API-Key": API_KEY.upper()},
        {"X-API-Key": API_KEY[:-1]},
        {"Authorization": f"Bearer {API_KEY}"},  # only the OpenAI route takes a bearer token
    ],
    ids=["missing", "empty", "wrong", "case", "prefix", "bearer"],
)
def test_every_write_needs_the_exact_key(client: TestClient, headers: dict[str, str]) -> None:
    line = b'{"id": "i", "fields": {"a": "b"}}'
    ndjson = {"content-type": "application/x-ndjson"}
    expected = (401, "missing_api_key") if "X-API-Key" not in headers else (403, "invalid_api_key")
    for method, path, body, content in [
        ("POST", "/v1/kb/records", RECORD, None),
        ("PUT", "/v1/kb/records/bramble_kitchen", {"fields": {"area": "moon"}}, None),
        ("DELETE", "/v1/kb/records/bramble_kitchen", None, None),
        ("POST", "/v1/kb/import?replace=true", None, line),
    ]:
        extra = ndjson if content is not None else {}
        r = client.request(method, path, json=body, content=content, headers={**headers, **extra})
        assert (r.status_code, r.json()["error"]["code"]) == expected, (method, path, r.text)
    _unchanged(client)


def test_reads_need_the_key_when_configured(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, reads_need_key=True)) as client:
        sid = client.post("/v1/sessions", headers=KEY).json()["id"]
        ask = {"messages": [{"role": "user", "content": "hi"}]}
        reads = [
            ("GET", "/v1/kb/records/bramble_kitchen", None),
            ("GET", "/v1/kb/records/search?q=north", None),
            ("GET", f"/v1/sessions/{sid}", None),
            ("POST", f"/v1/sessions/{sid}/messages", {"text": "hi"}),
            ("DELETE", f"/v1/sessions/{sid}", None),
            ("POST", "/v1/chat", ask),
        ]
        for method, path, body in reads:
            for headers, status in (({}, 401), ({"X-API-Key": "wrong"}, 403)):
                r = client.request(method, path, json=body, headers=headers)
                assert r.status_code == status, (method, path, headers, r.text)
        assert client.get(f"/v1/sessions/{sid}", headers=KEY).json()["messages"] == []
        for path in ("/healthz", "/readyz", "/metrics"):  # probes and scrapers never need the key
            assert client.get(path).status_code == 200


LONG = "ÆØÅ ß 東京 🍜 e\u0301 \u202etxet\u202c \U0001f469\u200d\U0001f4bb العربية " * 400  # ~14k characters
HOSTILE_FIELDS = {
    "name": "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "sql": "'; DROP TABLE records; -- \" OR 1=1 /* x' OR '1'='1",
    "nul": "before\x00after",
    "long": LONG,
    "json": '{"id": "fake", "fields": {}}\n\\u0000 \\" \u2028',
    "space": " \t leading and trailing \r\n",
    "<b>html key</b>": "&amp; &lt;entity&gt;",
    "k\x00ey": "a NUL in the attribute name",
}
HOSTILE_IDS = [
    "restaurant/pizza hut",  # MultiWOZ ids hold "/"
    "a%2Fb/../c%20",
    "x/",
    "/lead",
    "nul\x00id",
    "<script>alert(1)</script>",
    "'; DROP TABLE records; --",
    "?q=1&r=2#frag",
    "ÆØÅ 東京 🍜 " * 20,
]


def test_hostile_strings_round_trip_exactly(tmp_path: Path) -> None:
    # A real server: the test client decodes percent-escapes in paths twice, uvicorn once, like any server.
    with serve_in_thread(make_app(tmp_path)) as base_url, httpx.Client(base_url=base_url, timeout=30) as c:
        sent = {rid: {"id": rid, "domain": "<i>dom</i>\x00", "fields": HOSTILE_FIELDS} for rid in HOSTILE_IDS}
        for rid, record in sent.items():
            r = c.post("/v1/kb/records", json=record, headers=KEY)
            assert r.status_code == 201, r.text
            assert r.json()["record"] == record
            assert c.get(f"/v1/kb/records/{quote(rid, safe='')}").json() == record, repr(rid)
        # Regression: text after a NUL byte was never found (SQLite's json_each cut values at the NUL).
        for q in ("AFTER", "e\x00A", "drop table", "<SCRIPT>", "東京 🍜", "\u202etxet", '\\u0000 \\"'):
            found = c.get("/v1/kb/records/search", params={"q": q, "limit": 500}).json()["records"]
            assert {r["id"] for r in found} >= set(sent), repr(q)
            assert all(r == sent[r["id"]] for r in found if r["id"] in sent)
        found = c.get("/v1/kb/records/search", params={"q": "PIZZA HUT"}).json()["records"]
        assert found == [sent["restaurant/pizza hut"]]
        listed = c.get("/v1/kb/records", params={"offset": 12, "limit": 500}).json()["records"]
        assert listed == list(sent.values())

        swapped = {v[:50] or "empty": k for k, v in HOSTILE_FIELDS.items()}
        for rid in HOSTILE_IDS:
            path = f"/v1/kb/records/{quote(rid, safe='')}"
            r = c.put(path, json={"domain": rid, "fields": swapped}, headers=KEY)
            assert r.status_code == 200 and r.json()["record"]["id"] == rid, r.text
            assert c.get(path).json() == {"id": rid, "domain": rid, "fields": swapped}
            assert c.delete(path, headers=KEY).status_code == 200
            assert c.get(path).status_code == 404
        assert c.get("/readyz").json()["records"] == 12
