"""Export a training checkpoint as a small, self-describing pipeline folder to ship (issue #4 item 9).

The folder keeps what defines the pipeline (``pipeline.yaml``, the generator weights or LoRA adapter,
the training config with its provenance) and can swap the trained retriever for another retriever spec,
e.g. ``encoder:all-MiniLM-L6-v2``: the fine-tuned MiniLM weights are 90 MB, the bundled encoder is
installed with the package. ``README.md`` in the folder records where it came from and how to rebuild it.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

from mktod.checkpoint import (
    COMPLETE,
    GENERATOR_DIR,
    PIPELINE_FILE,
    RETRIEVER_DIR,
    load_spec,
)
from mktod.config import dump_config
from mktod.errors import ConfigError


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def folder_digest(path: Path) -> str:
    """SHA-256 over the relative paths and contents of every file: what a user checks a copy against."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def export_pipeline(
    checkpoint: Path, out: Path, retriever: str = "", note: str = "", command: str = "", force: bool = False
) -> Path:
    """Copy ``checkpoint`` into ``out`` (atomically), optionally replacing its retriever by ``retriever``."""
    spec = load_spec(checkpoint)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} exists and is not empty; pass --force to overwrite it")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(checkpoint / GENERATOR_DIR, tmp / GENERATOR_DIR)
    if retriever:
        spec = replace(spec, retriever=retriever)
    else:
        shutil.copytree(checkpoint / RETRIEVER_DIR, tmp / RETRIEVER_DIR)
    dump_config(spec, tmp / PIPELINE_FILE)
    if (checkpoint / "config.yaml").is_file():
        shutil.copy2(checkpoint / "config.yaml", tmp / "config.yaml")
    lines = [
        "# Exported MK-TOD pipeline",
        "",
        f"Exported from `{checkpoint}` by `{command or 'mktod export-pipeline'}`.",
        "The training command, data version and full training config are in `config.yaml` (`_provenance`).",
        "",
        f"- dataset: {spec.dataset}, KB setting: {spec.setting}, k: {spec.k}, meta mode: {spec.meta.mode}",
        f"- generator: {spec.generator.kind} on `{spec.generator.model}`"
        + (" + the LoRA adapter in `generator/`" if spec.generator.adapter else " (weights in `generator/`)"),
        f"- retriever: `{spec.retriever}`"
        if spec.retriever
        else "- retriever: the trained one in `retriever/`",
    ]
    if note:
        lines += ["", note]
    (tmp / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
