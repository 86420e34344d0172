"""Does a trained generator read its input? The gold response's likelihood with its own turn's input,
with another dialogue's, and with the context alone.

A generator that learnt only the responses' language gives the gold response the same likelihood
whatever it is shown; then the responses are a template and MML has nothing to teach the retriever
(every record explains the response equally well). For a trained checkpoint and the first N turns of
a split, with the records the training loop would retrieve (top-k with meta knowledge), this script
computes the mean log p(r | input) in eval mode for

- ``own``: the turn's own context and records;
- ``other_dialogue``: the context and records of the turn ``--shift`` places on (cyclically), which
  belongs to another dialogue for any shift longer than a dialogue;
- ``no_records``: the turn's own context with no record (FiD: one context-only passage);

and prints one JSON object with the three means (nats per response) and the gaps ``own -
other_dialogue`` (what the input as a whole is worth) and ``own - no_records`` (what the records are
worth). ``--out F`` adds it to a JSONL file and writes the table of all its lines beside it
(``F`` with ``.md``; bench/results/context_use.jsonl and .md hold the runs the README quotes):

    python bench/quality/context_use.py --checkpoint runs/camrest-condensed-prompt-cpu/best \\
        --dataset camrest --split dev --limit 96 --out bench/results/context_use.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from mktod.checkpoint import checkpoint_step, load_pipeline
from mktod.cli_common import add_path_options, offline_data_paths, positive_int
from mktod.datasets import get_loader
from mktod.generators.base import GeneratorInput
from mktod.train_data import build_examples, retrieve_records


def shifted(items: Sequence[GeneratorInput], shift: int) -> list[GeneratorInput]:
    """Item i gets the input of item (i + shift) mod n."""
    n = len(items)
    return [items[(i + shift) % n] for i in range(n)]


def summarise(own: Sequence[float], other: Sequence[float], bare: Sequence[float]) -> dict[str, float]:
    """Means (nats per response) and the two gaps, rounded for the table."""
    n = len(own)
    if n == 0 or len(other) != n or len(bare) != n:
        raise ValueError(f"need equally many likelihoods, got {len(own)}, {len(other)}, {len(bare)}")
    means = {key: sum(values) / n for key, values in (("own", own), ("other", other), ("bare", bare))}
    return {
        "own": round(means["own"], 3),
        "other_dialogue": round(means["other"], 3),
        "no_records": round(means["bare"], 3),
        "gap_input": round(means["own"] - means["other"], 3),
        "gap_records": round(means["own"] - means["bare"], 3),
    }


TABLE_HEAD = (
    "| checkpoint | step | split | turns | own input | another dialogue's | no records | gap: input "
    "| gap: records |",
    "|---|---|---|---|---|---|---|---|---|",
)


def table(rows: Sequence[dict[str, object]]) -> str:
    """The readable table of the JSONL lines (mean log-likelihoods of the gold response, nats)."""
    lines = [
        "# Does the generator read its input?",
        "",
        "Mean log p(gold response | input) in nats, eval mode, over the first `turns` turns of the split,",
        "with the records the training loop retrieves. *gap: input* = own − another dialogue's input;",
        "*gap: records* = own − the context alone. Near 0: the generator writes the same whatever it is",
        "shown.",
        "Written by `bench/quality/context_use.py --out bench/results/context_use.jsonl` (one line per run).",
        "",
        *TABLE_HEAD,
    ]
    for r in rows:
        lines.append(
            f"| `{r['checkpoint']}` | {r.get('step') or ''} | {r['dataset']} {r['split']} | {r['turns']} | "
            f"{r['own']:.2f} | "
            f"{r['other_dialogue']:.2f} | {r['no_records']:.2f} | {r['gap_input']:+.2f} | "
            f"{r['gap_records']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def append(path: Path, summary: dict[str, object]) -> None:
    """Add ``summary`` to the JSONL file (replacing an earlier line of the same checkpoint, split and
    turns) and rewrite the table beside it."""
    rows: list[dict[str, object]] = []
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    key = ("checkpoint", "step", "dataset", "split", "turns", "shift")
    rows = [r for r in rows if any(r.get(k) != summary.get(k) for k in key)] + [summary]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path.with_suffix(".md").write_text(table(rows), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="a `mktod train` checkpoint folder")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=positive_int, default=96, help="the first N system turns")
    ap.add_argument(
        "--shift", type=positive_int, default=37, help="take the input of the turn this many places on"
    )
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--out", type=Path, help="also append the summary as one line to this JSONL file")
    add_path_options(ap)  # --data-dir, --cache-dir, as every mktod command has them
    args = ap.parse_args(argv)
    paths = offline_data_paths(args)  # before transformers is imported

    pipeline = load_pipeline(args.checkpoint)
    examples = list(build_examples(get_loader(args.dataset).load_split(args.split, paths), None))
    examples = examples[: args.limit]
    if args.shift % len(examples) == 0:
        raise SystemExit(f"--shift {args.shift} maps each of the {len(examples)} turns onto itself")
    generator = pipeline.generator
    generator.model.eval()  # type: ignore[attr-defined]
    if hasattr(pipeline.retriever, "encoder"):
        pipeline.retriever.encoder.eval()
    own: list[GeneratorInput] = []
    for start in range(0, len(examples), args.batch_size):
        batch = examples[start : start + args.batch_size]
        records = retrieve_records(pipeline.retriever, batch, pipeline.config.k, pipeline.meta)
        own += [GeneratorInput(ex.context, recs) for ex, recs in zip(batch, records, strict=True)]
    inputs = {
        "own": own,
        "other": shifted(own, args.shift),
        "bare": [GeneratorInput(item.context, ()) for item in own],
    }
    responses = [ex.response for ex in examples]
    likelihoods: dict[str, list[float]] = {key: [] for key in inputs}
    with torch.no_grad():
        for start in tqdm(range(0, len(examples), args.batch_size), desc="turns", unit="batch"):
            end = start + args.batch_size
            for key, items in inputs.items():
                values = generator.joint_logprobs(items[start:end], responses[start:end])  # type: ignore[attr-defined]
                likelihoods[key] += [float(v) for v in values]
    summary = {
        "checkpoint": str(args.checkpoint),
        "step": checkpoint_step(args.checkpoint),  # best/ and last/ move on as a run goes on
        "dataset": args.dataset,
        "split": args.split,
        "turns": len(examples),
        "shift": args.shift,
        **summarise(likelihoods["own"], likelihoods["other"], likelihoods["bare"]),
    }
    print(json.dumps(summary))
    if args.out is not None:
        append(args.out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
