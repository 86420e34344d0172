"""The FastAPI app: ``create_app(settings, pipeline_factory)``; the lifespan opens the store, seeds the demo
KB into an empty store, builds the pipeline once and brings the retriever's index in line with the DB.

Run with ``uvicorn --factory service.app:app_from_env``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mktod.errors import ConfigError, GeneratorUnavailable
from mktod.kb import load_kb
from mktod.types import KB
from service import routes_chat, routes_health, routes_kb, routes_openai, routes_page
from service.limits import LimitsMiddleware, RateLimiter
from service.metrics import Metrics, MetricsMiddleware
from service.routes_deps import ApiError, Engine, PipelineLike
from service.settings import Settings
from service.store import Conflict, InvalidRecord, NotFound, Store

log = logging.getLogger("mktod.service")

PipelineFactory = Callable[[KB], PipelineLike]
_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    415: "unsupported_media_type",
}


def _seed(store: Store, settings: Settings) -> None:
    # Only a store that never held a KB is seeded: one emptied on purpose stays empty.
    if settings.seed_kb is None or store.kb_version() != 0 or store.list_records(0, 0).total:
        return
    kb = load_kb(settings.seed_kb)
    store.import_records(kb.records)
    log.info("seeded the KB with %d records from %s", len(kb), settings.seed_kb)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, object] = {"code": exc.code, "message": exc.message}
        if exc.rows is not None:
            body["rows"] = [r.model_dump() for r in exc.rows]
        return JSONResponse({"error": body}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    @app.exception_handler(InvalidRecord)
    async def invalid_record(_: Request, exc: InvalidRecord) -> JSONResponse:
        return _error(422, "invalid_record", str(exc))

    @app.exception_handler(GeneratorUnavailable)
    async def unavailable(_: Request, exc: GeneratorUnavailable) -> JSONResponse:
        log.warning("generator unavailable: %s", exc)
        retry = str(settings.retry_after_s)
        msg = "the reply generator is unavailable; retry later"
        return _error(503, "generator_unavailable", msg, {"Retry-After": retry})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "malformed_json", "the request body is not valid JSON")
        parts = []
        for e in errors[:10]:
            where = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "internal server error; the server log has the details")


def create_app(settings: Settings, pipeline_factory: PipelineFactory | PipelineLike) -> FastAPI:
    """The service app. ``pipeline_factory`` is a ready pipeline or a callable building one from the KB."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(Store, settings.db_path)
        try:
            await run_in_threadpool(_seed, store, settings)
            if hasattr(pipeline_factory, "respond"):
                pipeline: PipelineLike = cast(PipelineLike, pipeline_factory)
            else:
                kb = KB(await run_in_threadpool(store.all_records), name="service")
                pipeline = await run_in_threadpool(pipeline_factory, kb)
            engine = Engine(settings, store, pipeline, metrics)
            # Embeddings saved by an earlier run spare re-embedding unchanged records; the index itself
            # is always rebuilt from the database, so a crash between a KB write and its index
            # update is repaired here.
            await run_in_threadpool(engine.load_vectors)
            await run_in_threadpool(engine.sync_index)
            app.state.engine = engine
            yield
            await run_in_threadpool(engine.save_vectors)
        finally:
            await run_in_threadpool(store.close)

    app = FastAPI(
        title="MK-TOD dialogue service",
        version="0.1.0",
        description="Knowledge-grounded dialogue: dialogue -> retriever -> meta knowledge -> generator",
        lifespan=lifespan,
    )
    _install_error_handlers(app, settings)
    app.include_router(routes_health.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_kb.router)
    app.include_router(routes_page.router)
    limiter = RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None
    app.add_middleware(LimitsMiddleware, max_body_bytes=settings.max_body_bytes, limiter=limiter)
    # Added last, so outermost: it also counts the 413s and 429s answered by LimitsMiddleware.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from the environment, the pipeline from ``MKTOD_PIPELINE``
    (a ``mktod train`` checkpoint folder) on ``MKTOD_DEVICE`` (default cpu)."""
    settings = Settings.from_env(os.environ)
    if settings.pipeline is None:
        raise ConfigError("MKTOD_PIPELINE is not set: point it at a pipeline checkpoint directory")
    if not settings.pipeline.is_dir():
        raise ConfigError(f"MKTOD_PIPELINE={settings.pipeline}: not a folder (a `mktod train` checkpoint)")
    from mktod.checkpoint import load_pipeline  # torch and the models load only when a pipeline is served

    return create_app(settings, load_pipeline(settings.pipeline, os.environ.get("MKTOD_DEVICE", "cpu")))
