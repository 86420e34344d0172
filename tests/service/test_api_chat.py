from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from service_helpers import DownGenerator, make_app


def _ask(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}]}


def test_health_ready_and_seeded_kb(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["records"] == 12 and ready["kb_version"] == 1


def test_chat_returns_records_with_meta_tags(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        r = client.post("/v1/chat", json=_ask("where is the lantern noodle house ?"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["reply"] == "lantern noodle house is in the centre"
        top = body["records"][0]
        assert top["id"] == "lantern_noodle_house" and top["rank"] == 1
        assert set(top["tags"]) == {"order", "confidence", "cooccurrence"}
        assert isinstance(top["score"], float) and 0.0 <= top["confidence"] <= 1.0
        assert [rec["rank"] for rec in body["records"]] == [1, 2, 3]


def test_chat_uses_history_and_validates(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, max_message_chars=50, max_turns=3)) as client:
        ok = {
            "messages": [
                {"role": "user", "content": "a cheap guesthouse please"},
                {"role": "assistant", "content": "how about the quiet heron ?"},
                {"role": "user", "content": "where is the quiet heron ?"},
            ]
        }
        assert client.post("/v1/chat", json=ok).json()["reply"] == "the quiet heron is in the east"
        ends_with_assistant = {"messages": ok["messages"][:2]}
        r = client.post("/v1/chat", json=ends_with_assistant)
        assert r.status_code == 422 and "last message" in r.json()["error"]["message"]
        r = client.post("/v1/chat", json=_ask("x" * 51))
        assert r.status_code == 422 and r.json()["error"]["code"] == "message_too_long"
        r = client.post("/v1/chat", json={"messages": ok["messages"] * 2})
        assert r.json()["error"]["code"] == "too_many_turns"
        r = client.post("/v1/chat", content=b'{"messages": [', headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
        r = client.post("/v1/chat", json={"messages": [{"role": "user", "content": 5}]})
        assert r.status_code == 422
        assert "messages.0.content" in r.json()["error"]["message"]
        r = client.post("/v1/chat", json={"messages": [{"role": "robot", "content": "hi"}]})
        assert r.status_code == 422 and "role" in r.json()["error"]["message"]
        assert client.post("/v1/chat", json={"messages": []}).status_code == 422


def test_oversized_body_is_413(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, max_body_bytes=200)) as client:
        r = client.post("/v1/chat", json=_ask("y" * 500))
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

        def chunks() -> object:
            for _ in range(10):
                yield b"z" * 50

        r = client.post("/v1/chat", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_rate_limit_429_with_retry_after(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, rate_limit_per_minute=2)) as client:
        assert client.post("/v1/sessions").status_code == 201
        assert client.post("/v1/sessions").status_code == 201
        r = client.post("/v1/sessions")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
        # Another key has its own bucket; health checks are never limited.
        assert client.post("/v1/sessions", headers={"X-API-Key": "other"}).status_code == 201
        assert client.get("/healthz").status_code == 200


def test_generator_unavailable_is_503(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, generator=DownGenerator())) as client:
        r = client.post("/v1/chat", json=_ask("where is the marlowe grand ?"))
        assert r.status_code == 503 and r.headers["Retry-After"] == "30"
        assert r.json()["error"]["code"] == "generator_unavailable"
        assert "127.0.0.1" not in r.text  # backend details stay in the log
        sid = client.post("/v1/sessions").json()["id"]
        assert client.post(f"/v1/sessions/{sid}/messages", json={"text": "hi"}).status_code == 503
        assert client.get(f"/v1/sessions/{sid}").json()["messages"] == []


def test_metrics_and_unknown_route(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        client.post("/v1/chat", json=_ask("where is the seagull inn ?"))
        r = client.get("/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        text = client.get("/metrics").text
        assert 'mktod_http_requests_total{method="POST",route="/v1/chat",status="200"} 1' in text
        assert 'route="unmatched",status="404"' in text
        assert "mktod_http_request_duration_seconds_bucket" in text
        assert "mktod_retrieval_seconds_count 1" in text
        assert "mktod_generation_seconds_count 1" in text


def test_openapi_describes_everything(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        schema = client.get("/openapi.json").json()
        assert {"/v1/chat", "/v1/sessions/{session_id}/messages", "/v1/kb/import"} <= set(schema["paths"])
        assert {"ChatResponse", "RecordOut", "ErrorBody", "KBRecord"} <= set(schema["components"]["schemas"])
