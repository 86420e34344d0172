"""Training logs (``log.jsonl``: one JSON object per logged step) that stay true across resumes."""

from __future__ import annotations

import json
from pathlib import Path


def keep_until(path: Path, step: int) -> int:
    """Drop the entries after ``step``: a resumed run redoes those steps and logs them again.

    An interrupted run may have logged steps past its last checkpoint; without this the log holds
    two entries for them (and plots double back). Returns how many entries were dropped.
    """
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        tmp.replace(path)
    return len(lines) - len(kept)
