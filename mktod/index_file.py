"""The MKTODIDX container that `VectorIndex.save` writes: written atomically, verified before faiss reads it.

Layout (no pickle): magic b"MKTODIDX", uint64 header length, SHA-256 of the header, a UTF-8 JSON header
(format version, dim, spec, metric, id map, tombstones, count, search parameters, SHA-256 of the index
bytes), then the bytes of `faiss.serialize_index`. `read_index_file` checks both digests and the header's
schema before it returns anything, because faiss trusts its input and can crash the process on a corrupt
file. This module never imports faiss; whether the index bytes agree with the header is for the caller to
check once faiss has parsed them.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mktod.errors import MktodError

FORMAT_VERSION = 1
_MAGIC = b"MKTODIDX"
_PREFIX = struct.Struct("<8sQ32s")  # magic, header length, sha256(header)
_METRIC = "inner_product"


class IndexFileError(MktodError):
    """A saved index file is missing, corrupt, truncated or does not fit what the caller expects."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


@dataclass(frozen=True)
class IndexHeader:
    """What the header says about the index bytes that follow it.

    labels[i] is the faiss label of record ids[i]; tombstones are labels still in the faiss index whose
    records were removed; next_label is the next label to hand out. The search parameters are None where
    unset.
    """

    dim: int
    spec: str
    labels: list[int]
    ids: list[str]
    tombstones: list[int]
    next_label: int
    ef_search: int | None
    ef_construction: int | None
    nprobe: int | None


def write_index_file(
    path: Path, header: IndexHeader, data: bytes | memoryview, *, faiss_version: str
) -> None:
    """Write the header and index bytes atomically: a reader sees the old file or the new one, never a mix."""
    fields = {
        "format_version": FORMAT_VERSION,
        "dim": header.dim,
        "spec": header.spec,
        "metric": _METRIC,
        "count": len(header.ids),
        "labels": header.labels,
        "ids": header.ids,
        "tombstones": header.tombstones,
        "next_label": header.next_label,
        "params": {
            "ef_search": header.ef_search,
            "ef_construction": header.ef_construction,
            "nprobe": header.nprobe,
        },
        "index_nbytes": len(data),
        "index_sha256": hashlib.sha256(data).hexdigest(),
        "faiss_version": faiss_version,
    }
    head = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    prefix = _PREFIX.pack(_MAGIC, len(head), hashlib.sha256(head).digest())
    _atomic_write(path, [prefix, head, data])


def read_index_file(path: Path) -> tuple[IndexHeader, memoryview]:
    """Header and index bytes of a saved index, every integrity check done before faiss sees a byte."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexFileError(path, "no such index file") from None
    except OSError as err:
        raise IndexFileError(path, f"cannot read index file: {err.strerror}") from err
    if len(data) < _PREFIX.size:
        raise IndexFileError(path, f"file is {len(data)} bytes, too short for an index file (truncated?)")
    magic, head_len, head_digest = _PREFIX.unpack_from(data)
    if magic != _MAGIC:
        raise IndexFileError(path, "not an mktod index file (bad magic bytes)")
    head_end = _PREFIX.size + head_len
    if head_end > len(data):
        raise IndexFileError(path, "file is truncated inside its header")
    head = data[_PREFIX.size : head_end]
    if hashlib.sha256(head).digest() != head_digest:
        raise IndexFileError(path, "header checksum mismatch: the file is corrupt")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IndexFileError(path, f"header is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise IndexFileError(path, "header is not a JSON object")
    _check_header(path, header)
    blob = memoryview(data)[head_end:]
    if len(blob) != header["index_nbytes"]:
        raise IndexFileError(
            path, f"index data is {len(blob)} bytes but the header says {header['index_nbytes']}: truncated"
        )
    if hashlib.sha256(blob).hexdigest() != header["index_sha256"]:
        raise IndexFileError(path, "index data checksum mismatch: the file is corrupt")
    params = header["params"]
    return IndexHeader(
        dim=header["dim"],
        spec=header["spec"],
        labels=header["labels"],
        ids=header["ids"],
        tombstones=header["tombstones"],
        next_label=header["next_label"],
        ef_search=params["ef_search"],
        ef_construction=params["ef_construction"],
        nprobe=params["nprobe"],
    ), blob


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "dim": int,
    "spec": str,
    "metric": str,
    "count": int,
    "labels": list,
    "ids": list,
    "tombstones": list,
    "next_label": int,
    "params": dict,
    "index_nbytes": int,
    "index_sha256": str,
}


def _check_header(path: Path, header: dict[str, Any]) -> None:
    """Raise IndexFileError unless the decoded header has the version, fields and types `save` writes."""
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFileError(
            path, f"format version {version!r} is not supported (this mktod reads {FORMAT_VERSION})"
        )
    for key, kind in _HEADER_TYPES.items():
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise IndexFileError(path, f"header field {key!r} is missing or has the wrong type")
    if header["metric"] != _METRIC:
        raise IndexFileError(path, f"metric {header['metric']!r} is not supported (expected {_METRIC})")
    labels, ids = header["labels"], header["ids"]
    if len(labels) != len(ids) or len(ids) != header["count"] or len(set(ids)) != len(ids):
        raise IndexFileError(path, "header id map is inconsistent (lengths differ or ids repeat)")
    numbers = [*labels, *header["tombstones"]]
    if not all(isinstance(key, str) for key in ids) or not all(type(n) is int for n in numbers):
        raise IndexFileError(path, "header id map holds values of the wrong type")
    params = header["params"]
    if sorted(params) != ["ef_construction", "ef_search", "nprobe"] or not all(
        value is None or type(value) is int for value in params.values()
    ):
        raise IndexFileError(path, "header field 'params' is malformed")


def _atomic_write(path: Path, chunks: Sequence[bytes | memoryview]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory entry is flushed (POSIX).
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
