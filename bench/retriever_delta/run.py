"""What shipping a trained retriever as a quantised delta over its base encoder costs (mktod.encoder_delta).

For one trained retriever checkpoint it writes the retriever as a 4- and an 8-bit delta (``Retriever.save
(delta_bits=...)``, what ``mktod export-pipeline --retriever-bits`` does), loads each back and compares it
with the full weights on one split:

- bytes on disk (the delta file against the full checkpoint's weights), and how many rows of each
  matrix the delta keeps (the word-embedding rows training touched);
- how far training moved the weights: ||trained - base|| / ||base|| over all parameters;
- Recall@K (``mktod evaluate-retriever``'s numbers, through the same code), and the untuned base
  encoder's for scale;
- per turn, whether the delta ranks the turn's KB exactly as the full weights do (whole order and top
  record), and the largest difference of any retrieval score (a cosine: scores are in [-1, 1]).

    python bench/retriever_delta/run.py      # the shipped CamRest retriever's source run: ~2 min on 2 cores

Writes ``retriever_delta.json`` and ``retriever_delta.md`` in ``--out`` (default
bench/results/retriever_delta/). The checkpoint is a training run's (``runs/`` is not kept); the results
name it and the commit they came from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mktod.cli_common import add_path_options, offline_data_paths
from mktod.datasets import DataPaths, get_loader
from mktod.encoder import format_context, resolve_model
from mktod.encoder_delta import DELTA_FILE
from mktod.evaluate_retriever import score_split
from mktod.export import folder_size
from mktod.retriever import ENCODER_PREFIX, Retriever, build_retriever
from mktod.sysinfo import cpu_model, git_commit
from mktod.types import Split

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "bench" / "results" / "retriever_delta"
DEFAULT_RETRIEVER = "runs/camrest-condensed-prompt-smollm2-cpu-par448/best/retriever"
KS = (1, 3, 5, 7)


def weight_shift(trained: Retriever) -> float:
    """||trained - base|| / ||base|| over every parameter of the context tower."""
    from transformers import AutoModel

    base = AutoModel.from_pretrained(resolve_model(trained.encoder.config.model)).state_dict()
    moved = total = 0.0
    for name, weight in trained.encoder.context_model.state_dict().items():
        before = base[name].float()
        moved += float((weight.float() - before).pow(2).sum())
        total += float(before.pow(2).sum())
    shift: float = (moved / total) ** 0.5
    return shift


def rankings(retriever: Retriever, split: Split) -> list[list[tuple[str, float]]]:
    """Per turn: every record of the dialogue's KB as (id, score), best first."""
    contexts, kbs = [], []
    for dialogue, t, _ in split.iter_turns():
        contexts.append(format_context(dialogue.context(t)))
        kbs.append(dialogue.kb)
    k = max(len(kb.records) for kb in kbs)
    hits = retriever.retrieve_many(contexts, kbs, k)
    return [[(h.record.id, h.score) for h in turn] for turn in hits]


def agreement(full: list[list[tuple[str, float]]], other: list[list[tuple[str, float]]]) -> dict[str, float]:
    same_order = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(full, other, strict=True))
    same_top = sum(a[0][0] == b[0][0] for a, b in zip(full, other, strict=True))
    scores_full = [dict(turn) for turn in full]
    gap = max(abs(s - scores_full[n][i]) for n, turn in enumerate(other) for i, s in turn)
    return {
        "same_order_pct": round(100 * same_order / len(full), 2),
        "same_top1_pct": round(100 * same_top / len(full), 2),
        "max_score_difference": gap,
    }


def rows_kept(delta_file: Path) -> dict[str, int]:
    from safetensors.torch import load_file

    tensors = load_file(str(delta_file))
    return {k.removesuffix(".rows"): int(v.numel()) for k, v in tensors.items() if k.endswith(".rows")}


def measure(args: argparse.Namespace, paths: DataPaths) -> dict[str, Any]:
    split = get_loader(args.dataset).load_split(args.split, paths)
    source = Path(args.retriever)
    full = Retriever.load(source)
    versions: list[dict[str, Any]] = []

    def scored(name: str, retriever: Any, size: int | None, extra: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        scores = score_split(retriever, split, None, KS, label=name, setting="condensed")
        row = {
            "version": name,
            "bytes": size,
            **{f"recall@{k}": round(v, 2) for k, v in scores.recall.items()},
            "turns": scores.turns,
            **extra,
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row), flush=True)
        return row

    full_ranks = rankings(full, split)
    weights = sum(p.stat().st_size for p in (source / "context").glob("*.safetensors"))
    versions.append(scored("full weights", full, weights, {}))
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            folder = Path(tmp) / f"delta{bits}"
            full.save(folder, delta_bits=bits)
            loaded = Retriever.load(folder)
            extra = {
                **agreement(full_ranks, rankings(loaded, split)),
                "rows_kept": rows_kept(folder / DELTA_FILE),
            }
            versions.append(scored(f"{bits}-bit delta", loaded, folder_size(folder), extra))
    base = build_retriever(f"{ENCODER_PREFIX}{full.encoder.config.model}")
    assert isinstance(base, Retriever)
    versions.append(scored("base encoder, untuned", base, None, agreement(full_ranks, rankings(base, split))))
    return {
        "retriever": str(source),
        "base": full.encoder.config.model,
        "dataset": args.dataset,
        "split": args.split,
        "setting": "condensed",
        "weight_shift": weight_shift(full),
        "word_embedding_rows": int(full.encoder.context_model.config.vocab_size),
        "versions": versions,
        "machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
        "commit": git_commit(ROOT),
        "command": " ".join(["python bench/retriever_delta/run.py", *args.argv]),
    }


def write_markdown(result: dict[str, Any], out: Path) -> None:
    lines = [
        "# Shipping a trained retriever as a quantised delta",
        "",
        f"Retriever: `{result['retriever']}` (base `{result['base']}`), {result['dataset']} "
        f"{result['split']}, each dialogue's own KB, {result['versions'][0]['turns']} turns. "
        f"Commit {result['commit']}. Command: `{result['command']}`.",
        f"Training moved the weights by {100 * result['weight_shift']:.2f}% (||trained - base|| / ||base||).",
        "",
        "| version | MB on disk | Recall@1 | Recall@3 | Recall@7 | same ranking as full (% turns) "
        "| same top record (%) | largest score difference | word-embedding rows kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in result["versions"]:
        size = "" if v["bytes"] is None else f"{v['bytes'] / 1e6:.1f}"
        same = "" if "same_order_pct" not in v else f"{v['same_order_pct']:.2f}"
        top = "" if "same_top1_pct" not in v else f"{v['same_top1_pct']:.2f}"
        gap = "" if "max_score_difference" not in v else f"{v['max_score_difference']:.1e}"
        rows = v.get("rows_kept", {}).get("context.embeddings.word_embeddings.weight")
        kept = "" if rows is None else f"{rows:,} of {result['word_embedding_rows']:,}"
        lines.append(
            f"| {v['version']} | {size} | {v['recall@1']:.2f} | {v['recall@3']:.2f} | {v['recall@7']:.2f} "
            f"| {same} | {top} | {gap} | {kept} |"
        )
    lines += [
        "",
        "MB on disk: the full checkpoint's weight file, or the delta folder (delta + encoder.json + "
        "retriever.json; the base encoder is installed with the package). Scores are cosines in [-1, 1].",
        "The untuned base's row shows what the delta carries: how far the trained retriever's rankings "
        "are from where it started.",
    ]
    (out / "retriever_delta.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retriever", default=DEFAULT_RETRIEVER, help="a trained retriever checkpoint")
    parser.add_argument("--dataset", default="camrest", choices=["camrest", "smd", "mwoz"])
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 8], choices=[4, 8])
    add_path_options(parser)  # --data-dir, --cache-dir, as every mktod command has them
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    paths = offline_data_paths(args)  # before transformers loads a model
    if not (Path(args.retriever) / "retriever.json").is_file():
        raise SystemExit(
            f"{args.retriever}: not a retriever checkpoint (the default is the 448-turn CamRest run's; "
            "README, 'Training length', has its command)"
        )
    result = measure(args, paths)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retriever_delta.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result, args.out)
    print((args.out / "retriever_delta.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
