"""Smoke test of the retrieval benchmark's --quick mode: it runs end to end and writes its three outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_writes_results(tmp_path: Path) -> None:
    # A subprocess, because the benchmark sets faiss's global thread count.
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "retrieval" / "run.py"), "--quick", "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    payload = json.loads((tmp_path / "retrieval.json").read_text())
    rows = payload["results"]
    assert {(r["size"], r["index"]) for r in rows} >= {
        (s, i) for s in (1000, 10000) for i in ("Flat", "HNSW32")
    }
    assert all(r["recall_at_10"] == 1.0 for r in rows if r["index"] == "Flat")
    assert all(0.0 < r["single_p50_ms"] <= r["single_p99_ms"] for r in rows)
    assert "| records | index |" in (tmp_path / "retrieval.md").read_text()
    assert (tmp_path / "retrieval_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
