"""The bench scripts' one way to run the ``mktod`` command: the one installed beside the running
interpreter (so ``.venv/bin/python bench/...`` uses that environment's mktod whatever PATH says), from
the repository root, offline unless asked otherwise. A script puts bench/ on sys.path to import it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class MktodError(RuntimeError):
    """The command failed. ``str()`` is its last stderr line without argparse's ``mktod: error:``
    prefix and with the repository's own path left out, as a results table quotes it."""


def run_mktod(args: Sequence[str], *, capture: bool = True, offline: bool = True) -> str:
    """``mktod ARGS``' stdout ("" when not captured: its output then goes to the terminal, progress
    bars included); MktodError if it exits non-zero."""
    exe = str(Path(sys.executable).parent / "mktod")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"} if offline else None
    done = subprocess.run([exe, *args], cwd=ROOT, env=env, text=True, capture_output=capture)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise MktodError(last.removeprefix("mktod: error: ").replace(f"{ROOT}/", ""))
    return done.stdout or ""
