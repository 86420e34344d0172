"""Bring a device run's results (``run.py``'s ``summary.json`` and ``results.tar.gz``) into this checkout.

The device tool copies back what ``run.py`` wrote under ``$OUT``; the checkpoints stay on the machine.
This script puts each variant where ``bench/quality/run_local.py`` finds a row whose checkpoint is not
here:

- ``runs/device/<dataset>-<variant>/``: its training config and log (the dev curves) and its test
  predictions and records (run.py's default ``--work`` there too);
- ``runs/quality/<dataset>-test-<prefix><variant>/run.json``: the test scores as ``mktod evaluate``
  printed them, with the machine they ran on.

It prints a ``Row(...)`` for ``bench/quality/quality_rows.py`` per variant; add the ones to report and
run ``python bench/quality/run_local.py --only DATASET/ROW`` to put them in quality.md.

    python bench/device/import_run.py FILES_AT [--prefix gpu-]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # variants.py beside this script
from variants import VARIANTS

ROOT = Path(__file__).resolve().parents[2]
WORK = Path("runs") / "device"  # run.py's default --work: where the results' relative paths point


def machine_of(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    where = m.get("gpu") or f"{m.get('cpu_count')} CPU cores"
    return f"{where} (device tool), torch {m['torch']}, transformers {m['transformers']}"


def turns_per_step(config: Path) -> int:
    optim = yaml.safe_load(config.read_text(encoding="utf-8"))["optim"]
    return int(optim["batch_size"]) * int(optim["grad_accum"])


def row_text(
    dataset: str, name: str, variant: str, entry: dict[str, Any], machine: str, per_step: int
) -> str:
    """The quality_rows.Row for one variant, as Python source."""
    steps = entry.get("steps")
    cut = ", stopped by --max-time" if entry.get("out_of_time") else ""
    where = f"{machine}, {steps} steps x {per_step} turns{cut}, {entry['train_wall_s']:.0f} s"
    how = f"{shlex.join(entry['command'])} ({where})"
    what = VARIANTS[variant].label
    label = f"BERT2BERT (MiniLM, cross-attention copied from self-attention) FiD, {what}, GPU"
    return (
        "    Row(\n"
        f"        {name!r},\n"
        f"        {label!r},\n"
        f"        {str(WORK / f'{dataset}-{variant}' / 'best')!r},\n"
        f"        {dataset!r},\n"
        f"        {how!r},\n"
        f"        {str(WORK / f'{dataset}-{variant}')!r},\n"
        "        limit=None,\n"
        "        backbone='bert2bert-selfx',\n"
        "    ),"
    )


def import_run(source: Path, root: Path, prefix: str) -> list[str]:
    """Unpack ``source``'s results under ``root``; returns a Row per variant that was scored on test."""
    summary = json.loads((source / "summary.json").read_text(encoding="utf-8"))
    dataset = summary["dataset"]
    with tarfile.open(source / "results.tar.gz") as tar:
        tar.extractall(root / WORK, filter="data")
    machine = machine_of(summary)
    rows = []
    for name, entry in summary["variants"].items():
        test = entry.get("test")
        if not test:
            print(
                f"{name}: no test scores ({entry.get('skipped') or 'its training failed'})", file=sys.stderr
            )
            continue
        variant = name.removeprefix(f"{dataset}-")
        if variant not in VARIANTS:  # run.py's preflight: a check of the code paths, not a result
            continue
        row = f"{prefix}{variant}"
        # The files as unpacked here, wherever run.py's --work put them there.
        outputs = {
            key: str(WORK / name / "test" / Path(test[key]).name) for key in ("predictions", "records")
        }
        missing = [p for p in outputs.values() if not (root / p).is_file()]
        if missing:
            raise SystemExit(f"{source / 'results.tar.gz'}: no {', '.join(missing)} in it")
        run = {**test, **outputs, "machine": machine}
        evaluated = (s["command"] for s in summary["steps"] if s["name"] == f"test {name}")
        run["command"] = shlex.join(next(evaluated))
        folder = root / "runs" / "quality" / f"{dataset}-test-{row}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
        per_step = turns_per_step(root / WORK / name / "config.yaml")
        rows.append(row_text(dataset, row, variant, entry, machine, per_step))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="the folder holding summary.json and results.tar.gz")
    p.add_argument("--prefix", default="gpu-", help="row names: PREFIX + variant (default gpu-)")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    rows = import_run(args.source, args.root, args.prefix)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
