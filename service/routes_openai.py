"""An OpenAI-compatible ``POST /v1/chat/completions``, answered by the same engine path as ``/v1/chat``.

Stateless: the client sends the whole dialogue. System (and developer) messages are dropped before
retrieval and generation; the rest must end with a user turn. The reply carries an extra top-level
``mktod`` field with the records used and their meta knowledge. ``stream: true`` answers with
server-sent ``chat.completion.chunk`` events ending in ``data: [DONE]``; the reply is generated in full
first, so errors are ordinary HTTP errors rather than a broken stream.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse

from service import routes_chat
from service.routes_deps import ApiError, EngineDep, _check_key
from service.schemas import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ErrorBody,
    MktodExtension,
    OpenAIChatChunk,
    OpenAIChatCompletion,
    OpenAIChatRequest,
    OpenAIChoice,
    OpenAIChunkChoice,
    OpenAIDelta,
    OpenAIMessageOut,
    OpenAIUsage,
)

STREAM_CHUNKS = 4
_WORDS = re.compile(r"\s*\S+\s*")


def require_read_key_or_bearer(
    engine: EngineDep,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """The read-key check of ``/v1/chat``; OpenAI clients may send the key as ``Authorization: Bearer``."""
    if not engine.settings.reads_need_key:
        return
    given = x_api_key
    if given is None and authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            given = token.strip()
    _check_key(engine, given, "reading")


_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 413, 422, 429, 503)
}
router = APIRouter(prefix="/v1", dependencies=[Depends(require_read_key_or_bearer)], responses=_ERRORS)


def _tokens(text: str) -> int:
    """A rough token count: whitespace-separated words."""
    return len(text.split())


def split_content(text: str, parts: int = STREAM_CHUNKS) -> list[str]:
    """``text`` in at most ``parts`` pieces on word boundaries; joined they give ``text`` back."""
    words = _WORDS.findall(text)
    if not words:
        return [text] if text else []
    size = -(-len(words) // parts)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _sse(chunk: OpenAIChatChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"


def _stream(completion_id: str, created: int, model: str, answer: ChatResponse) -> Iterator[str]:
    def chunk(delta: OpenAIDelta, finish: bool = False, records: bool = False) -> str:
        return _sse(
            OpenAIChatChunk(
                id=completion_id,
                created=created,
                model=model,
                choices=[OpenAIChunkChoice(delta=delta, finish_reason="stop" if finish else None)],
                mktod=MktodExtension(records=answer.records) if records else None,
            )
        )

    yield chunk(OpenAIDelta(role="assistant", content=""))
    for piece in split_content(answer.reply):
        yield chunk(OpenAIDelta(content=piece))
    yield chunk(OpenAIDelta(), finish=True, records=True)
    yield "data: [DONE]\n\n"


@router.post(
    "/chat/completions",
    response_model=OpenAIChatCompletion,
    summary="OpenAI-compatible chat completion (stateless), with the records used under 'mktod'",
    responses={200: {"content": {"text/event-stream": {}}, "description": "stream: false or true"}},
)
async def chat_completions(
    body: OpenAIChatRequest, engine: EngineDep
) -> OpenAIChatCompletion | StreamingResponse:
    dialogue = [m for m in body.messages if m.role in ("user", "assistant")]
    if not any(m.role == "user" for m in dialogue):
        raise ApiError(422, "invalid_request", "messages: there is no message with role 'user'")
    request = ChatRequest(
        messages=[
            ChatMessage(role="user" if m.role == "user" else "assistant", content=m.text()) for m in dialogue
        ]
    )
    # The /v1/chat handler itself: the same turn and length limits, checks and engine call.
    answer = await routes_chat.chat(request, engine)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _stream(completion_id, created, body.model, answer),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    prompt_tokens = sum(_tokens(m.content) for m in request.messages)
    completion_tokens = _tokens(answer.reply)
    return OpenAIChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        choices=[OpenAIChoice(message=OpenAIMessageOut(content=answer.reply))],
        usage=OpenAIUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        mktod=MktodExtension(records=answer.records),
    )
