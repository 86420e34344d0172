"""The OpenAI-compatible endpoint, driven by the real ``openai`` client against a real uvicorn server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessageParam
from service_helpers import API_KEY, make_app

from mktod.local_server import free_port
from service.routes_openai import split_content

DIALOGUE: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant. Ignore everything about the seagull inn."},
    {"role": "user", "content": "a cheap guesthouse please"},
    {"role": "assistant", "content": "how about the quiet heron ?"},
    {"role": "user", "content": "where is the quiet heron ?"},
]


def _serve(state_dir: Path, **overrides: object) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        make_app(state_dir, **overrides), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tmp_path_factory.mktemp("openai"))


@pytest.fixture()
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=10) as c:
        yield c


def test_two_turn_conversation(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="mktod",
        messages=[DIALOGUE[0], DIALOGUE[1]],
    )
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-")
    assert first.model == "mktod" and first.choices[0].finish_reason == "stop"
    assert first.choices[0].message.role == "assistant" and first.choices[0].message.content
    second = client.chat.completions.create(model="mktod", messages=DIALOGUE)
    assert second.choices[0].message.content == "the quiet heron is in the east"
    usage = second.usage
    assert usage is not None and usage.completion_tokens == 7
    # The system message does not count: it is not part of the dialogue the pipeline sees.
    assert usage.prompt_tokens == 4 + 6 + 6 and usage.total_tokens == usage.prompt_tokens + 7


def test_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="mktod",
        messages=DIALOGUE,
        stream=True,
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(content) > 1 and "".join(c or "" for c in content) == "the quiet heron is in the east"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)


def test_raw_stream_ends_with_done(base_url: str) -> None:
    body = {"model": "mktod", "messages": DIALOGUE, "stream": True, "temperature": 0.2}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert '"records"' in lines[-2]  # the final chunk carries the extension too


def test_no_user_message_is_a_client_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(model="mktod", messages=[DIALOGUE[0]])
    assert info.value.status_code == 422 and "user" in str(info.value)
    with pytest.raises(openai.APIStatusError) as status:
        client.chat.completions.create(model="mktod", messages=DIALOGUE[:3])
    assert "last message" in str(status.value)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="mktod", messages=[])


def test_records_extension_in_raw_json(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mktod",
        messages=DIALOGUE,
        extra_body={"top_p": 0.5},
    )
    body = raw.http_response.json()
    records = body["mktod"]["records"]
    assert records[0]["id"] == "the_quiet_heron" and records[0]["rank"] == 1
    assert set(records[0]["tags"]) == {"order", "confidence", "cooccurrence"}
    assert raw.parse().choices[0].message.content == "the quiet heron is in the east"


def test_same_limits_and_auth_as_chat(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, reads_need_key=True, max_message_chars=30)) as http:
        ask = {"model": "m", "messages": [{"role": "user", "content": "where is the quiet heron ?"}]}
        r = http.post("/v1/chat/completions", json=ask)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = http.post("/v1/chat/completions", json=ask, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403
        for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"X-API-Key": API_KEY}):
            assert http.post("/v1/chat/completions", json=ask, headers=headers).status_code == 200
        too_long = {"model": "m", "messages": [{"role": "user", "content": "x" * 31}]}
        r = http.post("/v1/chat/completions", json=too_long, headers={"X-API-Key": API_KEY})
        assert r.status_code == 422 and r.json()["error"]["code"] == "message_too_long"
        assert "/v1/chat/completions" in http.get("/openapi.json").json()["paths"]


def test_split_content() -> None:
    text = "the quiet heron is in the east"
    pieces = split_content(text)
    assert 1 < len(pieces) <= 4 and "".join(pieces) == text
    assert split_content("") == [] and split_content("one") == ["one"]
