"""Stateless chat and persistent sessions: validate, call the pipeline off the event loop, store."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import APIRouter

from mktod.types import Reply, Utterance
from service.routes_deps import ApiError, Engine, EngineDep, ReadKey, record_out
from service.schemas import (
    ChatRequest,
    ChatResponse,
    ErrorBody,
    RecordOut,
    SessionCreated,
    SessionMessageIn,
    SessionMessageOut,
    SessionOut,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 422, 429, 503)
}
router = APIRouter(prefix="/v1", dependencies=[ReadKey], responses=_ERRORS)


def _check_text(engine: Engine, text: str, where: str) -> None:
    limit = engine.settings.max_message_chars
    if len(text) > limit:
        raise ApiError(422, "message_too_long", f"{where} has {len(text)} characters; the limit is {limit}")
    if not text.strip():
        raise ApiError(422, "empty_message", f"{where} is empty")


def _response(reply: Reply) -> ChatResponse:
    return ChatResponse(reply=reply.text, records=[record_out(r) for r in reply.records])


@router.post("/chat", response_model=ChatResponse, summary="Answer the last user message of a dialogue")
async def chat(body: ChatRequest, engine: EngineDep) -> ChatResponse:
    if len(body.messages) > engine.settings.max_turns:
        raise ApiError(
            422,
            "too_many_turns",
            f"messages has {len(body.messages)} entries; the limit is {engine.settings.max_turns}",
        )
    for i, message in enumerate(body.messages):
        _check_text(engine, message.content, f"messages[{i}].content")
    if body.messages[-1].role != "user":
        raise ApiError(422, "invalid_request", "messages: the last message must have role 'user'")
    context = tuple(Utterance("user" if m.role == "user" else "system", m.content) for m in body.messages)
    return _response(await engine.run(engine.respond, context))


@router.post("/sessions", response_model=SessionCreated, status_code=201, summary="Start a session")
async def create_session(engine: EngineDep) -> SessionCreated:
    return SessionCreated(id=await engine.run(engine.store.create_session))


def _session_turn(engine: Engine, session_id: str, text: str) -> Reply:
    history = engine.store.get_session(session_id).messages
    context: list[Utterance] = [Utterance("user" if m.role == "user" else "system", m.text) for m in history]
    context.append(Utterance("user", text))
    # Long sessions keep going; the pipeline sees only the most recent turns.
    reply = engine.respond(context[-engine.settings.max_turns :])
    # Stored only once there is a reply, and in one transaction: neither a failed generation nor a crash
    # leaves an unanswered message behind.
    records = json.dumps([record_out(r).model_dump() for r in reply.records], ensure_ascii=False)
    engine.store.append_messages(session_id, [("user", text, None), ("assistant", reply.text, records)])
    return reply


@router.post(
    "/sessions/{session_id}/messages", response_model=ChatResponse, summary="Send a user message to a session"
)
async def post_message(session_id: str, body: SessionMessageIn, engine: EngineDep) -> ChatResponse:
    _check_text(engine, body.text, "text")
    return _response(await engine.run(_session_turn, engine, session_id, body.text))


def _records(raw: str | None) -> list[RecordOut] | None:
    return None if raw is None else [RecordOut.model_validate(r) for r in json.loads(raw)]


@router.get("/sessions/{session_id}", response_model=SessionOut, summary="A session and its messages")
async def get_session(session_id: str, engine: EngineDep) -> SessionOut:
    history = await engine.run(engine.store.get_session, session_id)
    messages: Sequence[SessionMessageOut] = [
        SessionMessageOut(
            seq=m.seq, role=m.role, text=m.text, records=_records(m.records_json), created_at=m.created_at
        )
        for m in history.messages
    ]
    return SessionOut(id=history.session_id, created_at=history.created_at, messages=list(messages))


@router.delete("/sessions/{session_id}", status_code=204, summary="Delete a session and its messages")
async def delete_session(session_id: str, engine: EngineDep) -> None:
    await engine.run(engine.store.delete_session, session_id)
