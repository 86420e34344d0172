"""Liveness, readiness and Prometheus metrics (outside /v1: never rate limited or keyed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from service.routes_deps import ApiError, EngineDep
from service.schemas import ErrorBody, Health, Ready

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorBody}}, summary="Ready to answer")
async def readyz(engine: EngineDep) -> Ready:
    try:
        page = await engine.run(engine.store.list_records, 0, 0)
        version = await engine.run(engine.store.kb_version)
    except Exception as exc:
        raise ApiError(
            503, "not_ready", f"the state database is unavailable: {exc}", {"Retry-After": "5"}
        ) from None
    return Ready(status="ready", kb_version=version, records=page.total)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format 0.0.4)")
async def metrics(engine: EngineDep) -> PlainTextResponse:
    return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
