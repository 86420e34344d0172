"""Does MML move a retriever when the generator cannot tell its records apart?

In the short seq2seq CPU runs the jointly trained retriever fell from the warm-up's Recall@1 to
chance within 50 steps, while ``mml_posterior.py`` found the generator's posterior within a point of
q (so the MML gradient q - posterior is nearly zero and points toward the gold records). One
explanation: AdamW divides each parameter's step by the running size of its own gradient, so even a
gradient that is nearly zero, and noise, moves every weight by about the learning rate each step.

This script isolates the retriever half of the joint step (mktod.train: top-k records with meta
knowledge and the easy negative, differentiable scores, ``mml_loss``, clipping, AdamW) and replaces
the generator by a blind one: every record gets the same log-likelihood plus Gaussian noise of
``--noise`` nats (0: no record preferred at all). It reports dev Recall@1 before and after:

    python bench/quality/retriever_drift.py --retriever runs/retriever-camrest --dataset camrest \
        --noise 0 0.1 1 --steps 100 --eval-every 25

and writes bench/results/retriever_drift.{json,md}. A fall with noise but none without it says that a
blind generator's noise alone, amplified by Adam, is enough to undo the warm-up. Rows of earlier
invocations with the same settings are kept (a row measured again replaces its old one), so the
table can be built up a few rows at a time; the committed one came from

    ... --noise 0 0.1 1 3            # fp32
    ... --noise 0.1 1 --precision bf16

At 3 nats, about the noise dropout put into each record's likelihood before ``loss.mml_dropout``,
Recall@1 falls to below chance within 100 steps, as in the joint runs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mktod.cli_common import add_path_options, offline_data_paths
from mktod.datasets import get_loader
from mktod.evaluate_retriever import score_split
from mktod.losses import mml_loss
from mktod.meta import MetaConfig
from mktod.retriever import Retriever, build_retriever
from mktod.train_data import build_examples, record_scores, retrieve_records
from mktod.types import Split

ROOT = Path(__file__).resolve().parents[2]


def recall_at_1(retriever: Retriever, split: Split) -> float:
    retriever.encoder.eval()
    with torch.no_grad():
        return float(score_split(retriever, split, None, (1,)).recall[1])


def drift(
    spec: str,
    train: Split,
    dev: Split,
    noise: float,
    steps: int,
    batch_size: int,
    k: int,
    lr: float,
    temperature: float,
    seed: int,
    eval_every: int = 0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Recall@1 on ``dev`` of a fresh copy of retriever ``spec``, before and after ``steps`` MML steps
    against a blind generator with ``noise`` nats of noise per record (and every ``eval_every``
    steps, when > 0: the joint runs fell between their step-50 and step-100 evaluations).

    ``precision`` "bf16": the scores are computed under bf16 autocast, as in the seq2seq CPU runs
    (``optim.precision: bf16``), whose retrievers fell; the SmolLM2 runs (fp32) kept theirs."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    retriever = build_retriever(spec)
    if not isinstance(retriever, Retriever):
        sys.exit(f"{spec}: MML needs a dense retriever")
    before = recall_at_1(retriever, dev)
    examples = build_examples(train, None)
    meta = MetaConfig(mode="prompt", temperature=temperature)  # the CPU runs' tags (with the negative)
    params = [p for p in retriever.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    trace: list[tuple[int, float]] = []
    retriever.encoder.train()  # dropout on, as in joint training
    device_type = next(iter(params)).device.type
    for step in tqdm(range(1, steps + 1), desc=f"noise {noise}", unit="step"):
        batch = rng.sample(examples, batch_size)
        records = retrieve_records(retriever, batch, k, meta)
        with torch.autocast(device_type, torch.bfloat16, enabled=precision == "bf16"):
            scores, mask = record_scores(retriever, [ex.query for ex in batch], records)
        scores = scores.float()  # as joint_loss hands them to mml_loss
        blind = noise * torch.randn(scores.shape, device=scores.device)  # log p(r|c,e_i) up to a constant
        loss = mml_loss(scores, blind, temperature=temperature, mask=mask)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if eval_every > 0 and step % eval_every == 0 and step < steps:
            trace.append((step, recall_at_1(retriever, dev)))
            retriever.encoder.train()
    after = recall_at_1(retriever, dev)
    return {
        "noise": noise,
        "precision": precision,
        "steps": steps,
        "recall@1_before": before,
        "recall@1_after": after,
        "trace": [*trace, (steps, after)],
    }


def _row_key(row: dict[str, Any]) -> tuple[bool, str, float]:
    """fp32 rows first, then by precision and noise (rows written before --precision are fp32)."""
    precision = str(row.get("precision", "fp32"))
    return precision != "fp32", precision, float(row["noise"])


def merge_rows(new: list[dict[str, Any]], settings: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """``new`` plus the rows of ``out``'s report that were run with the same settings and are not
    measured again here (same noise and precision), in :func:`_row_key` order."""
    path = out / "retriever_drift.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if old.get("settings") != settings:
        return new
    measured = {_row_key(r) for r in new}
    return sorted([*(r for r in old["rows"] if _row_key(r) not in measured), *new], key=_row_key)


def write_report(rows: list[dict[str, Any]], settings: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "retriever_drift.json").write_text(
        json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n", encoding="utf-8"
    )
    lines = [
        "# Retriever drift under a blind generator",
        "",
        "`python bench/quality/retriever_drift.py` (see its docstring): the retriever half of the joint",
        "MML step with every record given the same generator log-likelihood plus Gaussian noise.",
        "",
        "Settings: " + ", ".join(f"{key} {value}" for key, value in settings.items()) + ".",
        "",
        "| noise (nats) | precision | steps | dev Recall@1 before | after "
        "| after each evaluation (step: Recall@1) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['noise']} | {r.get('precision', 'fp32')} | {r['steps']} "
            f"| {r['recall@1_before']:.2f} | {r['recall@1_after']:.2f} | "
            + ", ".join(f"{s}: {v:.2f}" for s, v in r["trace"])
            + " |"
            for r in rows
        ),
        "",
    ]
    (out / "retriever_drift.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retriever", required=True, help="a retriever checkpoint (runs/retriever-X)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 1.0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=25, help="dev Recall@1 every N steps (0: at the end)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-5, help="the CPU configs' retriever.lr")
    ap.add_argument("--temperature", type=float, default=0.05, help="the CPU configs' mml_temperature")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        nargs="+",
        default=["fp32"],
        help="score under bf16 autocast too (the seq2seq CPU runs' optim.precision); one row per value",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    add_path_options(ap)  # --data-dir, --cache-dir, as every mktod command has them
    args = ap.parse_args(argv)
    paths = offline_data_paths(args)  # before transformers is imported
    loader = get_loader(args.dataset)
    train, dev = loader.load_split("train", paths), loader.load_split("dev", paths)
    rows = [
        drift(
            args.retriever,
            train,
            dev,
            n,
            args.steps,
            args.batch_size,
            args.k,
            args.lr,
            args.temperature,
            args.seed,
            args.eval_every,
            precision,
        )
        for precision in args.precision
        for n in args.noise
    ]
    settings = {
        "retriever": args.retriever,
        "dataset": args.dataset,
        "batch size": args.batch_size,
        "k": args.k,
        "lr": args.lr,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    write_report(merge_rows(rows, settings, args.out), settings, args.out)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
