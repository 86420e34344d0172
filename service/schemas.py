"""Request and response bodies: every one a pydantic model, so the OpenAPI schema describes the API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # Unknown keys are a client bug worth reporting, not silently dropping.
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, invalid_request")
    message: str = Field(description="What was wrong and what to do")
    rows: list[RowError] | None = Field(default=None, description="Per-row problems of a KB import")


class ErrorBody(BaseModel):
    error: ErrorDetail


class RowError(BaseModel):
    row: int = Field(description="1-based row (JSON Lines: line; CSV: data row after the header)")
    message: str


class Tags(BaseModel):
    order: str
    confidence: str
    cooccurrence: str


class RecordOut(BaseModel):
    """A retrieved record with its retrieval score, rank and meta knowledge."""

    id: str
    domain: str
    fields: dict[str, str]
    score: float
    rank: int
    confidence: float
    tags: Tags


class ChatMessage(_Strict):
    role: Literal["user", "assistant"]
    content: str


class ChatRequest(_Strict):
    messages: list[ChatMessage] = Field(
        min_length=1, description="The dialogue so far, ending with a user turn"
    )


class ChatResponse(BaseModel):
    reply: str
    records: list[RecordOut]


class SessionCreated(BaseModel):
    id: str


class SessionMessageIn(_Strict):
    text: str


class SessionMessageOut(BaseModel):
    seq: int
    role: Literal["user", "assistant"]
    text: str
    records: list[RecordOut] | None
    created_at: float


class SessionOut(BaseModel):
    id: str
    created_at: float
    messages: list[SessionMessageOut]


class KBRecord(_Strict):
    id: str = Field(min_length=1)
    domain: str = ""
    fields: dict[str, str] = Field(min_length=1)


class KBRecordUpdate(_Strict):
    domain: str = ""
    fields: dict[str, str] = Field(min_length=1)


class KBRecordWritten(BaseModel):
    record: KBRecord
    kb_version: int


class KBVersion(BaseModel):
    kb_version: int


class KBPage(BaseModel):
    records: list[KBRecord]
    total: int
    offset: int
    limit: int


class KBSearchResult(BaseModel):
    records: list[KBRecord]


class KBImportResult(BaseModel):
    imported: int
    removed: int
    kb_version: int


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    kb_version: int
    records: int


# --- OpenAI-compatible chat completions -------------------------------------------------------------


class OpenAIContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: str = ""


class OpenAIChatMessage(BaseModel):
    # OpenAI clients send more keys than we use (name, tool_calls ...): ignored, like unknown request fields.
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[OpenAIContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if part.type == "text")


class OpenAIChatRequest(BaseModel):
    """An OpenAI ``chat.completions`` request; sampling options and other extra fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(description="Echoed back; the service always answers with its own pipeline")
    messages: list[OpenAIChatMessage] = Field(
        min_length=1, description="The dialogue; system messages are ignored, the last turn must be a user's"
    )
    stream: bool = False


class OpenAIMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class OpenAIChoice(BaseModel):
    index: int = 0
    message: OpenAIMessageOut
    finish_reason: Literal["stop"] = "stop"


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MktodExtension(BaseModel):
    records: list[RecordOut] = Field(description="The retrieved records the reply used, with meta knowledge")


class OpenAIChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[OpenAIChoice]
    usage: OpenAIUsage
    mktod: MktodExtension


class OpenAIDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class OpenAIChunkChoice(BaseModel):
    index: int = 0
    delta: OpenAIDelta
    finish_reason: Literal["stop"] | None = None


class OpenAIChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[OpenAIChunkChoice]
    mktod: MktodExtension | None = None


ErrorDetail.model_rebuild()
