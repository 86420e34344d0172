"""What the route modules share: the engine (store + pipeline + index sync), API errors and dependencies."""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from mktod.generators.base import GeneratorInput
from mktod.types import KB, Hit, Record, Reply, TaggedRecord, Utterance
from service import vector_store
from service.metrics import Metrics
from service.schemas import KBRecord, RecordOut, RowError, Tags
from service.settings import Settings
from service.store import Store

T = TypeVar("T")


VECTOR_SAVE_INTERVAL_S = 30.0
log = logging.getLogger("mktod.service")


class PipelineLike(Protocol):
    def respond(self, context: Sequence[Utterance], kb: KB) -> Reply: ...

    def respond_many(self, contexts: Sequence[Sequence[Utterance]], kbs: Sequence[KB]) -> list[Reply]: ...


@dataclass
class _Pending:
    """One turn waiting for the pipeline; whichever request thread holds the lock answers it."""

    context: Sequence[Utterance]
    done: threading.Event = field(default_factory=threading.Event)
    reply: Reply | None = None
    error: BaseException | None = None


class ApiError(Exception):
    """An error the client caused or must know about, rendered as ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        rows: list[RowError] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.rows = rows


class _TimedRetriever:
    """Delegates to the pipeline's retriever and records how long retrieval takes."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.name: str = getattr(inner, "name", "retriever")

    def build_index(self, kb: KB) -> None:
        self._inner.build_index(kb)

    def update_index(self, kb: KB) -> int:
        """Re-index after a KB edit: the dense retriever embeds only the changed records (returns how
        many); retrievers without an incremental path (BM25, frequency) rebuild at next to no cost."""
        update = getattr(self._inner, "update_index", None)
        if not callable(update):
            self._inner.build_index(kb)
            return 0
        embedded = int(update(kb))
        self._metrics.inc(
            "mktod_index_records_embedded_total", "Records embedded by index updates", value=embedded
        )
        return embedded

    def retrieve(self, context: str, kb: KB, k: int) -> tuple[Hit, ...]:
        return self.retrieve_many([context], [kb], k)[0]

    def retrieve_many(self, contexts: Sequence[str], kbs: Sequence[KB], k: int) -> list[tuple[Hit, ...]]:
        start = time.perf_counter()
        try:
            hits: list[tuple[Hit, ...]] = self._inner.retrieve_many(contexts, kbs, k)
            return hits
        finally:
            self._metrics.observe(
                "mktod_retrieval_seconds", "Time spent retrieving records", time.perf_counter() - start
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TimedGenerator:
    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        start = time.perf_counter()
        try:
            texts: list[str] = self._inner.generate(batch)
            return texts
        finally:
            self._metrics.observe(
                "mktod_generation_seconds", "Time spent generating replies", time.perf_counter() - start
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Engine:
    """The store, the pipeline and the KB snapshot its retriever index was built from.

    Blocking methods run in the thread pool; one lock serialises pipeline calls and index rebuilds, so a
    reply is always generated from a KB snapshot that matches the retriever's index. Turns that arrive
    while the pipeline is busy queue up and are answered together, up to ``max_batch`` in one
    ``respond_many`` call: batched generation keeps throughput up under concurrent load.
    """

    def __init__(self, settings: Settings, store: Store, pipeline: PipelineLike, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.metrics = metrics
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self.max_batch = max(1, settings.max_batch)
        self._vectors_saved_at = -math.inf
        self._kb = KB((), name="service")
        self._version = -1
        for attr, wrapper in (("retriever", _TimedRetriever), ("generator", _TimedGenerator)):
            inner = getattr(pipeline, attr, None)
            if inner is not None and not isinstance(inner, wrapper):
                setattr(pipeline, attr, wrapper(inner, metrics))

    @property
    def kb_version(self) -> int:
        return self._version

    @property
    def vectors_dir(self) -> Path:
        return self.settings.state_dir / "index"

    def load_vectors(self) -> bool:
        """Hand the retriever the record embeddings an earlier process saved (if they fit its encoder)."""
        retriever = getattr(self.pipeline, "retriever", None)
        adopt = getattr(retriever, "adopt_vectors", None)
        saved = vector_store.load(self.vectors_dir) if callable(adopt) else None
        if saved is None or adopt is None:
            return False
        adopted = bool(adopt(*saved))
        if not adopted:
            log.warning("%s: saved embeddings do not fit this encoder; re-embedding", self.vectors_dir)
        return adopted

    def save_vectors(self, every_s: float = 0.0) -> None:
        """Persist the retriever's record embeddings, at most once per ``every_s`` seconds."""
        retriever = getattr(self.pipeline, "retriever", None)
        saved_vectors = getattr(retriever, "saved_vectors", None)
        if not callable(saved_vectors) or time.monotonic() - self._vectors_saved_at < every_s:
            return
        texts, vectors = saved_vectors()
        vector_store.save(self.vectors_dir, texts, vectors)
        self._vectors_saved_at = time.monotonic()

    def sync_index(self) -> None:
        """Rebuild the retriever's index from the database if the KB changed since the last build."""
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        version = self.store.kb_version()
        if version == self._version:
            return
        # Version first, then records: a write landing in between makes the records newer than the
        # version we note, so the next call rebuilds once more (harmless), never the other way round.
        kb = KB(self.store.all_records(), name="service")
        retriever = getattr(self.pipeline, "retriever", None)
        if retriever is not None and len(kb) and retriever.update_index(kb):
            # New embeddings: persist them now and then (and at shutdown), so that a restart, even
            # after a crash, re-embeds only the records edited since the last save.
            self.save_vectors(every_s=VECTOR_SAVE_INTERVAL_S)
        self._kb, self._version = kb, version
        self.metrics.inc("mktod_index_rebuilds_total", "Retriever index rebuilds after KB changes")

    def respond(self, context: Sequence[Utterance]) -> Reply:
        """The reply to one turn, generated alone or in a batch with turns queued meanwhile."""
        pending = _Pending(context)
        with self._queue_lock:
            self._queue.append(pending)
        while not pending.done.is_set():
            with self._lock:
                # Our turn may have been answered by the thread that held the lock before us.
                if pending.done.is_set():
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._answer_locked(batch)
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None  # done without an error means answered
        return pending.reply

    def _answer_locked(self, batch: list[_Pending]) -> None:
        try:
            self._sync_locked()
            replies = self.pipeline.respond_many([p.context for p in batch], [self._kb] * len(batch))
        except BaseException as exc:  # every waiter gets the error (e.g. GeneratorUnavailable -> 503)
            for p in batch:
                p.error = exc
                p.done.set()
            return
        self.metrics.inc("mktod_pipeline_batches_total", "Pipeline calls (batches of queued turns)")
        self.metrics.inc("mktod_pipeline_turns_total", "Turns answered by the pipeline", value=len(batch))
        for p, reply in zip(batch, replies, strict=True):
            p.reply = reply
            p.done.set()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking work off the event loop."""
        return await run_in_threadpool(fn, *args)


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def _check_key(engine: Engine, given: str | None, what: str) -> None:
    expected = engine.settings.api_key
    if expected is None:
        raise ApiError(403, "writes_disabled", f"{what} is disabled: the server has no MKTOD_API_KEY set")
    if given is None:
        raise ApiError(401, "missing_api_key", f"{what} needs an API key in the X-API-Key header")
    # Bytes, not str: compare_digest rejects non-ASCII str, and hostile headers may hold anything.
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise ApiError(403, "invalid_api_key", "the X-API-Key header does not match the server's key")


def require_write_key(
    engine: EngineDep, x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    _check_key(engine, x_api_key, "changing the KB")


def require_read_key(
    engine: EngineDep, x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    if engine.settings.reads_need_key:
        _check_key(engine, x_api_key, "reading")


WriteKey = Depends(require_write_key)
ReadKey = Depends(require_read_key)


def record_out(tagged: TaggedRecord) -> RecordOut:
    t = tagged.tags
    return RecordOut(
        id=tagged.record.id,
        domain=tagged.record.domain,
        fields=dict(tagged.record.fields),
        score=tagged.score,
        rank=tagged.rank,
        confidence=tagged.confidence,
        tags=Tags(order=t.order, confidence=t.confidence, cooccurrence=t.cooccurrence),
    )


def kb_record(record: Record) -> KBRecord:
    return KBRecord(id=record.id, domain=record.domain, fields=dict(record.fields))
