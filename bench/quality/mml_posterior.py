"""Where MML pushes a retriever: the generator's posterior over a turn's records against the retriever's q.

MML's gradient moves the retrieval distribution q (softmax of the scores over a turn's records) towards
the posterior q_i p(r|c,e_i) / sum_j q_j p(r|c,e_j): the records under which the generator finds the gold
response likely. That helps only if the posterior favours the records that hold the response's
entities. This script measures it for a trained checkpoint, on turns whose gold entities are in their
KB, with the records the training loop would give (top-k with meta knowledge, the easy negative with
``--negative``):

    python bench/quality/mml_posterior.py --checkpoint runs/camrest-condensed-prompt-cpu/best \
        --dataset camrest --split dev --limit 100 --negative

and prints one JSON object: the mean mass q and the posterior put on gold records (records holding a
gold entity), how often each one's top record is gold, and the share of gold records among the
records (what a uniform distribution would put on them), the total variation between q and the
posterior, and the spread of the generator's single-record log-likelihoods (nats). Posterior gold
mass below q's means MML teaches the retriever to move away from the records the response needs.

``--dropout`` computes the likelihoods with dropout on, as joint training did before
``loss.mml_dropout`` (default off) took it out of them; ``--out F`` appends the summary to a JSONL
file (bench/results/mml_posterior.jsonl holds the runs quoted in the README).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from mktod.checkpoint import load_pipeline
from mktod.cli_common import add_path_options, offline_data_paths
from mktod.datasets import get_loader
from mktod.generators.base import GeneratorInput, TrainableGenerator
from mktod.metrics import normalize
from mktod.mml_diag import gold_mask, posterior_stats
from mktod.retriever import Retriever
from mktod.train_data import TrainExample, build_examples, record_scores, retrieve_records


def run_temperature(checkpoint: Path) -> float:
    """loss.mml_temperature of the run that wrote ``checkpoint``: from the checkpoint's own config.yaml
    (a copy of the run's, so a checkpoint folder copied elsewhere still has it), else from the run
    folder's. No silent default: with τ = 1 instead of a run's 0.05, q is near uniform and the
    numbers say nothing about that run."""
    for config_file in (checkpoint / "config.yaml", checkpoint.parent / "config.yaml"):
        if config_file.is_file():
            config: dict[str, Any] = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
            return float(config.get("loss", {}).get("mml_temperature", 1.0))  # TrainConfig's default
    sys.exit(
        f"{checkpoint}: no config.yaml in it or beside it to read loss.mml_temperature from; "
        "pass --temperature"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="a `mktod train` checkpoint folder")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=100, help="first N turns that have a gold KB entity")
    ap.add_argument("--negative", action="store_true", help="add the easy negative, as in training")
    ap.add_argument(
        "--temperature", type=float, help="q's temperature (default: the run's loss.mml_temperature)"
    )
    ap.add_argument(
        "--dropout",
        action="store_true",
        help="the generator's likelihoods with dropout on, as joint training computes them",
    )
    ap.add_argument("--seed", type=int, default=0, help="for the dropout masks")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", type=Path, help="also append the summary as one line to this JSONL file")
    add_path_options(ap)  # --data-dir, --cache-dir, as every mktod command has them
    args = ap.parse_args(argv)
    paths = offline_data_paths(args)  # before transformers is imported

    temperature = args.temperature or run_temperature(args.checkpoint)
    pipeline = load_pipeline(args.checkpoint)
    if not isinstance(pipeline.retriever, Retriever):
        sys.exit(
            f"{args.checkpoint}: MML needs a dense retriever, this pipeline has {type(pipeline.retriever)}"
        )
    generator = pipeline.generator
    if not isinstance(generator, TrainableGenerator):
        sys.exit(f"{args.checkpoint}: MML needs a trainable generator, this pipeline has {type(generator)}")
    meta = replace(pipeline.meta, use_negative=args.negative)
    split = get_loader(args.dataset).load_split(args.split, paths)
    chosen: list[tuple[TrainExample, set[str]]] = []
    for example in build_examples(split, None):  # example.gold: the response's entities, normalised
        kb_values = {normalize(v) for record in example.kb for v in record.values}
        entities = set(example.gold) & kb_values
        if entities:
            chosen.append((example, entities))
    chosen = chosen[: args.limit]

    stats: dict[str, list[float]] = {}
    torch.manual_seed(args.seed)
    pipeline.retriever.encoder.eval()
    generator.model.train(args.dropout)
    with torch.no_grad():
        for start in tqdm(range(0, len(chosen), args.batch_size), desc="turns", unit="batch"):
            part = chosen[start : start + args.batch_size]
            batch = [example for example, _ in part]
            records = retrieve_records(pipeline.retriever, batch, pipeline.config.k, meta)
            inputs = [GeneratorInput(ex.context, recs) for ex, recs in zip(batch, records, strict=True)]
            lik = generator.joint_and_single_logprobs(inputs, [ex.response for ex in batch])
            scores, mask = record_scores(pipeline.retriever, [ex.query for ex in batch], records)
            gold = gold_mask(records, [g for _, g in part])
            for key, values in posterior_stats(
                scores.float().cpu(), lik.single.float().cpu(), mask.cpu() & lik.mask.cpu(), gold, temperature
            ).items():
                stats.setdefault(key, []).extend(values)
    n = len(chosen)
    summary = {
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "split": args.split,
        "turns": n,
        "negative": args.negative,
        "temperature": temperature,
        "dropout": args.dropout,
        # Masses, shares and total variation in percent; the likelihood spread in nats.
        **{
            key: round((1 if key == "likelihood_spread" else 100) * sum(values) / n, 2) if n else None
            for key, values in stats.items()
        },
    }
    print(json.dumps(summary))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
