"""Loading a script under bench/ in a test: bench/ is not a package, so each script is loaded from
its file under the name its neighbours import it by (``import findings`` and the like)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_bench_script(relative: str) -> ModuleType:
    """A fresh module of ``bench/<relative>``, registered in sys.modules under the file's stem."""
    path = ROOT / "bench" / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module
