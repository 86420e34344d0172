"""KB management: read, search, create, update, delete and bulk import; writes need the API key."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request

from mktod.kb import record_from_json
from mktod.types import Record
from service.routes_deps import ApiError, EngineDep, ReadKey, WriteKey, kb_record
from service.schemas import (
    ErrorBody,
    KBImportResult,
    KBPage,
    KBRecord,
    KBRecordUpdate,
    KBRecordWritten,
    KBSearchResult,
    KBVersion,
    RowError,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429)
}
router = APIRouter(prefix="/v1/kb", tags=["kb"], responses=_ERRORS)
_JSONL_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/json-lines",
        "text/jsonl",
    }
)
_CSV_TYPES = frozenset({"text/csv", "application/csv"})
# ":path" so ids holding "/" (MultiWOZ's "restaurant/pizza hut") can be read, replaced and deleted too.
_ONE = "/records/{record_id:path}"
# SQLite integers are 64-bit: a larger OFFSET would overflow in the driver rather than find no rows.
_MAX_OFFSET = 2**63 - 1


def _to_record(body: KBRecord) -> Record:
    return Record(id=body.id, fields=body.fields, domain=body.domain)


@router.get("/records", response_model=KBPage, dependencies=[ReadKey], summary="List records in KB order")
async def list_records(
    engine: EngineDep,
    offset: Annotated[int, Query(ge=0, le=_MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> KBPage:
    page = await engine.run(engine.store.list_records, offset, limit)
    return KBPage(records=[kb_record(r) for r in page.records], total=page.total, offset=offset, limit=limit)


@router.get(
    "/records/search", response_model=KBSearchResult, dependencies=[ReadKey], summary="Substring search"
)
async def search_records(
    engine: EngineDep,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> KBSearchResult:
    records = await engine.run(engine.store.search_records, q, limit)
    return KBSearchResult(records=[kb_record(r) for r in records])


@router.get(_ONE, response_model=KBRecord, dependencies=[ReadKey], summary="One record")
async def get_record(record_id: str, engine: EngineDep) -> KBRecord:
    return kb_record(await engine.run(engine.store.get_record, record_id))


async def _write(engine: EngineDep, version: int) -> int:
    # The DB is the truth; the index follows it now, and at startup if we crash before this line.
    await engine.run(engine.sync_index)
    return version


@router.post(
    "/records",
    response_model=KBRecordWritten,
    status_code=201,
    dependencies=[WriteKey],
    summary="Add a record",
)
async def create_record(body: KBRecord, engine: EngineDep) -> KBRecordWritten:
    version = await engine.run(engine.store.create_record, _to_record(body))
    return KBRecordWritten(record=body, kb_version=await _write(engine, version))


@router.put(
    _ONE,
    response_model=KBRecordWritten,
    dependencies=[WriteKey],
    summary="Replace a record",
)
async def update_record(record_id: str, body: KBRecordUpdate, engine: EngineDep) -> KBRecordWritten:
    record = KBRecord(id=record_id, domain=body.domain, fields=body.fields)
    version = await engine.run(engine.store.update_record, _to_record(record))
    return KBRecordWritten(record=record, kb_version=await _write(engine, version))


@router.delete(_ONE, response_model=KBVersion, dependencies=[WriteKey], summary="Delete a record")
async def delete_record(record_id: str, engine: EngineDep) -> KBVersion:
    version = await engine.run(engine.store.delete_record, record_id)
    return KBVersion(kb_version=await _write(engine, version))


def _parse_jsonl(text: str) -> tuple[list[tuple[int, Record]], list[RowError]]:
    records: list[tuple[int, Record]] = []
    errors: list[RowError] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, record_from_json(json.loads(line), "record")))
        except json.JSONDecodeError as exc:
            errors.append(RowError(row=lineno, message=f"invalid JSON ({exc.msg})"))
        except ValueError as exc:
            errors.append(RowError(row=lineno, message=str(exc)))
    return records, errors


def _parse_csv(text: str) -> tuple[list[tuple[int, Record]], list[RowError]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if "id" not in header:
        return [], [RowError(row=1, message="the header must have an 'id' column; other columns are fields")]
    records: list[tuple[int, Record]] = []
    errors: list[RowError] = []
    for row in reader:
        if None in row:
            errors.append(RowError(row=reader.line_num, message="more cells than header columns"))
            continue
        fields = {k: v for k, v in row.items() if k not in ("id", "domain") and v}
        obj = {"id": row["id"] or "", "domain": row.get("domain") or "", "fields": fields}
        try:
            records.append((reader.line_num, record_from_json(obj, "record")))
        except ValueError as exc:
            errors.append(RowError(row=reader.line_num, message=str(exc)))
    return records, errors


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {"schema": {"type": "string", "description": "One KB record per line"}},
            "text/csv": {"schema": {"type": "string", "description": "Header: id, domain?, field columns"}},
        },
    }
}


@router.post(
    "/import",
    response_model=KBImportResult,
    dependencies=[WriteKey],
    openapi_extra=_IMPORT_BODY,
    summary="Import records from JSON Lines or CSV: all rows or none",
)
async def import_records(request: Request, engine: EngineDep, replace: bool = False) -> KBImportResult:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _JSONL_TYPES:
        parse = _parse_jsonl
    elif content_type in _CSV_TYPES:
        parse = _parse_csv
    else:
        raise ApiError(
            415, "unsupported_media_type", "send the import as application/x-ndjson (JSON Lines) or text/csv"
        )
    try:
        text = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", f"the import is not UTF-8 (byte {exc.start})") from None
    records, errors = parse(text)
    seen: set[str] = set()
    for row, record in records:
        if record.id in seen:
            errors.append(RowError(row=row, message=f"duplicate record id {record.id!r} within the import"))
        seen.add(record.id)
    if errors:
        raise ApiError(
            422, "invalid_rows", f"{len(errors)} row(s) are invalid; nothing was imported", rows=errors
        )
    if not records:
        raise ApiError(422, "empty_import", "the import holds no records")
    result = await engine.run(engine.store.import_records, [r for _, r in records], replace)
    await _write(engine, result.kb_version)
    return KBImportResult(imported=result.imported, removed=result.removed, kb_version=result.kb_version)
