"""`mktod data fetch` against a real HTTP server on loopback (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mktod.cli import main
from mktod.errors import DataError
from mktod.fetch import FetchError, ManifestEntry, fetch, load_manifest, verify_file

FILES = {"smd/a.txt": b"hello dialogue\n", "mwoz/b.json": b'{"x": 1}\n'}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "remote"
    for name, body in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def entries(base: str, tamper: str | None = None) -> list[ManifestEntry]:
    out = []
    for name, body in FILES.items():
        digest = hashlib.sha256(body).hexdigest()
        if name == tamper:
            digest = "0" * 64
        out.append(ManifestEntry(file=name, url=f"{base}/{name}", sha256=digest, size=len(body)))
    return out


def test_fetch_downloads_and_verifies(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    results = fetch(entries(server), dest)
    assert [r.status for r in results] == ["downloaded", "downloaded"]
    for name, body in FILES.items():
        assert (dest / name).read_bytes() == body
    # A second run verifies and keeps what is there.
    assert [r.status for r in fetch(entries(server), dest)] == ["present", "present"]


def test_checksum_mismatch_leaves_no_file(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="SHA-256"):
        fetch(entries(server, tamper="mwoz/b.json"), dest)
    assert not (dest / "mwoz" / "b.json").exists()
    assert not list((dest / "mwoz").glob("*.part"))


def test_corrupt_local_copy_is_reported_not_overwritten(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    fetch(entries(server), dest)
    (dest / "smd/a.txt").write_bytes(b"edited locally\n")
    with pytest.raises(FetchError, match="--force"):
        fetch(entries(server), dest)
    assert (dest / "smd/a.txt").read_bytes() == b"edited locally\n"
    fetch(entries(server), dest, force=True)
    assert (dest / "smd/a.txt").read_bytes() == FILES["smd/a.txt"]


def test_unreachable_host_gives_clear_message(tmp_path: Path) -> None:
    # Port 9 on loopback (discard) is closed here: the connection is refused at once.
    entry = ManifestEntry(file="x.txt", url="http://127.0.0.1:9/x.txt", sha256="0" * 64, size=1)
    with pytest.raises(FetchError, match="could not download"):
        fetch([entry], tmp_path)


def test_verify_file_size_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    entry = ManifestEntry(file="f", url="u", sha256=hashlib.sha256(b"ab").hexdigest(), size=2)
    with pytest.raises(FetchError, match="missing"):
        verify_file(path, entry)
    path.write_bytes(b"abc")
    with pytest.raises(FetchError, match="size 3 bytes, expected 2"):
        verify_file(path, entry)
    path.write_bytes(b"ab")
    verify_file(path, entry)


def test_manifest_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text('{"files": [\n{"file": "a"}\n]}')
    with pytest.raises(DataError, match=r"files\[0\]"):
        load_manifest(bad)
    bad.write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        load_manifest(bad)


def test_shipped_manifest_matches_shared_data(data_dir: Path) -> None:
    manifest = load_manifest(Path(__file__).resolve().parents[1] / "data" / "manifest.json")
    assert len(manifest) >= 30
    for entry in manifest:
        verify_file(data_dir / entry.file, entry)


def test_cli_fetch(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": [e.__dict__ for e in entries(server)]}))
    dest = tmp_path / "data"
    assert main(["data", "fetch", "--manifest", str(manifest), "--data-dir", str(dest)]) == 0
    assert "all 2 files verified" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"files": [e.__dict__ for e in entries(server, tamper="smd/a.txt")]}))
    assert main(["data", "fetch", "--manifest", str(bad), "--data-dir", str(tmp_path / "d2")]) == 2
    assert "SHA-256" in capsys.readouterr().err
