"""`mktod data fetch`: download the canonical dataset files and verify their SHA-256.

The manifest (``data/manifest.json``) lists every file the loaders read, with its public source URL
(pinned to a commit), size and SHA-256. A file is only moved into place after its checksum matched,
so an interrupted or tampered download never leaves a bad file where the loaders look.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mktod.errors import DataError, MktodError


class FetchError(MktodError):
    """A download failed or did not match its checksum."""


@dataclass(frozen=True)
class ManifestEntry:
    file: str  # path relative to the data directory, e.g. "smd/eer_txt/test.txt"
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class FetchResult:
    file: str
    status: str  # "present" (already there and verified), "downloaded"


def load_manifest(path: Path) -> tuple[ManifestEntry, ...]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "dataset manifest not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    entries = []
    for i, item in enumerate(raw.get("files", [])):
        try:
            entries.append(
                ManifestEntry(
                    file=str(item["file"]),
                    url=str(item["url"]),
                    sha256=str(item["sha256"]),
                    size=int(item["size"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(path, f"files[{i}]: expected file, url, sha256 and size ({exc})") from None
    if not entries:
        raise DataError(path, "manifest lists no files")
    return tuple(entries)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, entry: ManifestEntry) -> None:
    """Raise FetchError unless ``path`` has exactly the manifest's size and SHA-256."""
    if not path.is_file():
        raise FetchError(f"{path}: missing")
    size = path.stat().st_size
    if size != entry.size:
        raise FetchError(f"{path}: size {size} bytes, expected {entry.size} ({entry.url})")
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise FetchError(f"{path}: SHA-256 {actual}, expected {entry.sha256} ({entry.url})")


Downloader = Callable[[str, Path], None]


def urllib_download(url: str, dest: Path, timeout: float = 60.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(
            f"could not download {url}: {reason}. Without internet access, copy the dataset files "
            "into the data directory by hand (see data/manifest.json for the list and checksums)."
        ) from None


def fetch(
    entries: Sequence[ManifestEntry],
    data_dir: Path,
    download: Downloader = urllib_download,
    force: bool = False,
) -> list[FetchResult]:
    """Make every manifest file present and verified under ``data_dir``.

    Files already present with the right checksum are kept unless ``force``. Each download goes to a
    temporary file beside its destination and replaces it only after verification.
    """
    results = []
    for entry in entries:
        dest = data_dir / entry.file
        if not force and dest.is_file():
            try:
                verify_file(dest, entry)
            except FetchError as exc:
                # A local copy that differs is reported, never silently overwritten: it may be the
                # user's own edited data.
                raise FetchError(f"{exc}; re-run with --force to replace it") from None
            results.append(FetchResult(entry.file, "present"))
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            download(entry.url, tmp)
            verify_file(tmp, entry)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        results.append(FetchResult(entry.file, "downloaded"))
    return results
