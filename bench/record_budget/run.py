"""What each training config's record budget (``generator.max_record_tokens``) cuts, on every split.

Runs ``mktod record-budget --json`` on each training config under configs/ (or the ones named) and
writes one table: per config and split, the longest rendered record (with the longest meta-knowledge
tags its mode can give it), the share of records cut, and the fields the budget leaves out. A config
whose generator cannot be built here (a hub model with no hub access, a backbone not built yet) is
listed with the reason instead of failing the run.

    python bench/record_budget/run.py                      # every training config: ~15 min on 2 cores
    python bench/record_budget/run.py --configs configs/smd-condensed-prompt-smollm2-cpu.yaml

Writes ``record_budget.json`` (every number) and ``record_budget.md`` (the table) in ``--out``
(default bench/results/record_budget/). Naming configs measures those again and keeps the other
configs' results already in ``--out``, except those whose config file is gone, so the table stays
whole without the full run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for mktod_cli
from mktod_cli import MktodError, run_mktod

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "bench" / "results" / "record_budget"
NOT_TRAINING = ("retriever-",)  # configs/ files that configure other commands


def training_configs() -> list[Path]:
    return sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith(NOT_TRAINING))


def measure(config: Path, where: Sequence[str]) -> dict[str, Any]:
    """One config's ``mktod record-budget --json`` object, or ``{"error": the command's last line}``."""
    try:
        text = run_mktod(["record-budget", "--config", str(config), "--json", *where])
    except MktodError as error:
        return {"error": str(error)}
    out: dict[str, Any] = json.loads(text)
    return out


def merged(out: Path, new: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``new`` over the results already in ``out``, less those whose config file no longer exists,
    in config order (as a full run writes them)."""
    path = out / "record_budget.json"
    old: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    kept = {name: res for name, res in old.items() if (ROOT / name).exists()}  # absolute names too
    both = {**kept, **new}
    return {name: both[name] for name in sorted(both)}


def left_out(fields: dict[str, float], limit: int = 4) -> str:
    """The fields not always shown whole, least shown first: ``food 0%, phone 0%, …``."""
    cut = sorted((share, name) for name, share in fields.items() if share < 100.0)
    text = ", ".join(f"{name} {share:.4g}%" for share, name in cut[:limit])  # 99.96%, never "100%"
    return text + (f" (+{len(cut) - limit} more)" if len(cut) > limit else "") if cut else "none"


def table(results: dict[str, dict[str, Any]]) -> str:
    head = [
        "| config | meta | budget | split | longest | cut | fields not always whole (share shown) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows, skipped = [], []
    for name, res in results.items():
        if "error" in res:
            skipped.append(f"- `{name}`: {res['error']}")
            continue
        for s in res["splits"]:
            rows.append(
                f"| `{name}` | {res['meta_mode']} | {s['max_record_tokens']} | {s['split']} | "
                f"{s['longest_record_tokens']} | {s['records_cut']:.1f}% | {left_out(s['fields_shown'])} |"
            )
    text = [
        "# Record budgets",
        "",
        "`python bench/record_budget/run.py`: `mktod record-budget --json` on each training config. "
        "Tokens are the config's generator's own (SmolLM2's BPE, MiniLM's wordpieces, a T5's "
        "sentencepiece), each record rendered with the longest meta-knowledge tags its mode can give "
        "it; *cut* is the share of the split's records (each turn's KB, or the dataset-level KB once) "
        "longer than the budget, which lose their last fields.",
        "",
        *head,
        *rows,
    ]
    if skipped:
        text += ["", "Not measured here:", "", *skipped]
    return "\n".join(text) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", type=Path, help="training configs (default: all of configs/)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--data-dir", help="as for mktod (default: $MKTOD_DATA_DIR, else ../shared/datasets)")
    ap.add_argument("--cache-dir", help="as for mktod (default: data/cache)")
    args = ap.parse_args(argv)
    where = [*(["--data-dir", args.data_dir] if args.data_dir else [])]
    where += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    results: dict[str, dict[str, Any]] = {}
    configs = args.configs or training_configs()
    for i, config in enumerate(configs, start=1):
        path = config.resolve()
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(config)
        print(f"[{i}/{len(configs)}] {name}", file=sys.stderr, flush=True)
        results[name] = measure(path, where)
    if args.configs:
        results = merged(args.out, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "record_budget.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "record_budget.md").write_text(table(results), encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
