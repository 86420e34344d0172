"""The dense retriever's record embeddings on disk, so a restart re-embeds only what changed.

The index itself is always rebuilt from the database (the KB's one source of truth), so it cannot
disagree with the KB after a crash; what is persisted is the text -> embedding map the rebuild reuses.
A stale file (older than the last KB edits) still saves the work for every unchanged record; a damaged
file or one from another encoder is ignored. Written to a temporary file and renamed into place, so a
crash mid-write leaves the previous file.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger("mktod.service")
FILE = "record_vectors.npz"


def save(directory: Path, texts: list[str], vectors: npt.NDArray[np.float32]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    tmp = directory / f".{FILE}.tmp-{os.getpid()}"
    with tmp.open("wb") as fh:
        # Texts as UTF-8 JSON bytes: loading never needs pickle, whatever the state dir holds.
        encoded = np.frombuffer(json.dumps(texts).encode("utf-8"), dtype=np.uint8)
        np.savez(fh, texts=encoded, vectors=vectors)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path


def load(directory: Path) -> tuple[list[str], npt.NDArray[np.float32]] | None:
    path = directory / FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            texts = json.loads(data["texts"].tobytes().decode("utf-8"))
            vectors = np.asarray(data["vectors"], dtype=np.float32)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts is not a list of strings")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as exc:
        log.warning("%s: unreadable (%s); the index is rebuilt from the database", path, exc)
        return None
    return texts, vectors
