"""Retriever training, resumable: the distant-supervision warm-up of METHOD.md §2, then optionally MML
against a frozen trained generator (:mod:`mktod.retriever_mml`). Both stages run through one loop,
:func:`run_stage`, and differ only in their batch loss.

Pseudo-positive of a turn = the record of the dialogue's own KB whose attribute values occur most often
in the context plus the gold response (turns where no record matches anything are skipped). In the
large-scale setting that record is mapped to the same entity of the dataset-level KB, which is what the
retriever will search at test time. Loss: in-batch contrastive, the other turns' positives being the
negatives, identical positives merged so a record is never its own negative.

Layout of `output_dir`: ``config.yaml`` (resolved config + provenance), ``<stage>/step-NNNNNN/``
(resumable checkpoints: model, optimizer, scheduler, step, RNG state), ``<stage>/log.jsonl`` and
``final/`` (a retriever checkpoint for :func:`mktod.retriever.build_retriever`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mktod import __version__
from mktod.config import check_same_config, dump_config
from mktod.datasets import DataPaths, get_loader
from mktod.deadline import past_deadline
from mktod.encoder import DenseEncoder, format_context
from mktod.errors import ConfigError
from mktod.evaluate_retriever import RetrievalScores, large_kb, score_split
from mktod.kb import linearise, value_text
from mktod.losses import in_batch_contrastive
from mktod.retriever import Retriever, build_retriever, value_counts
from mktod.retriever_config import RetrieverTrainConfig, StageConfig, WarmupConfig
from mktod.retriever_mml import BatchLoss, frozen_generator_mml
from mktod.runlog import keep_until
from mktod.sysinfo import bf16_cpu_warning
from mktod.train_data import build_examples
from mktod.types import KB, Record, Split

# Attributes that describe a dialogue's search rather than the entity (MWOZ `choice`, `ref`); they
# differ between copies of one entity, so they are ignored when mapping a row to the dataset-level KB.
_SEARCH_ATTRIBUTES = frozenset({"choice", "ref"})
_COMPLETE = "COMPLETE"


@dataclass(frozen=True)
class WarmupExample:
    context: str  # formatted context (what the retriever reads)
    positive: Record  # pseudo-positive, from the KB the retriever will search
    matches: int  # value occurrences that made it the positive


@dataclass(frozen=True)
class ExampleStats:
    turns: int
    used: int
    no_match: int  # no record of the dialogue's KB had any value in context + response
    unmapped: int  # large-scale only: the positive has no counterpart in the dataset-level KB


@dataclass(frozen=True)
class TrainResult:
    output: Path  # the final retriever checkpoint; with out_of_time, the stage folder to --resume from
    start_step: int  # 0, or the step a resumed run picked up from
    steps: int
    last_loss: float
    dev: RetrievalScores | None
    out_of_time: bool = False  # stopped by the deadline before the last stage ended: no final/ yet


# ------------------------------------------------------------------------------------ training data


def pseudo_positive(kb: KB, text: str) -> tuple[Record, int] | None:
    """The record whose values occur most often in `text` (first in KB order on a tie), or None."""
    if len(kb) == 0:
        return None
    counts = value_counts(kb, text)
    best = max(range(len(kb)), key=lambda i: (counts[i], -i))
    return (kb.records[best], counts[best]) if counts[best] > 0 else None


def _entity_key(record: Record) -> tuple[str, str]:
    return record.domain, record.fields.get("name", "")


def map_record(record: Record, candidates: Mapping[tuple[str, str], list[Record]]) -> Record | None:
    """The dataset-level record with the same domain and name whose entity attributes all agree."""
    for entity in candidates.get(_entity_key(record), []):
        if all(entity.fields.get(k) == v for k, v in record.fields.items() if k not in _SEARCH_ATTRIBUTES):
            return entity
    return None


def warmup_examples(split: Split, global_kb: KB | None) -> tuple[list[WarmupExample], ExampleStats]:
    """Distant-supervision examples of `split`; positives from `global_kb` when it is given."""
    by_key: dict[tuple[str, str], list[Record]] = {}
    for entity in global_kb or ():
        by_key.setdefault(_entity_key(entity), []).append(entity)
    examples: list[WarmupExample] = []
    turns = no_match = unmapped = 0
    for dialogue, t, turn in split.iter_turns():
        turns += 1
        context = format_context(dialogue.context(t))
        found = pseudo_positive(dialogue.kb, f"{context} system: {value_text(turn.response)}")
        if found is None:
            no_match += 1
            continue
        positive, matches = found
        if global_kb is not None:
            mapped = map_record(positive, by_key)
            if mapped is None:
                unmapped += 1
                continue
            positive = mapped
        examples.append(WarmupExample(context, positive, matches))
    return examples, ExampleStats(turns, len(examples), no_match, unmapped)


def data_fingerprint(examples: Sequence[WarmupExample]) -> str:
    """SHA-256 of exactly what training reads (contexts and positives' text): the data version."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.context}\t{linearise(ex.positive)}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------- checkpoints


def latest_checkpoint(stage_dir: Path) -> Path | None:
    done = [p for p in stage_dir.glob("step-*") if (p / _COMPLETE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def _save_checkpoint(stage_dir: Path, step: int, state: dict[str, Any], config_text: str, keep: int) -> None:
    path = stage_dir / f"step-{step:06d}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    torch.save(state, path / "state.pt")
    (path / "config.yaml").write_text(config_text, encoding="utf-8")
    # Written last: a checkpoint interrupted mid-write is never picked up by --resume.
    (path / _COMPLETE).write_text(f"{step}\n", encoding="utf-8")
    done = sorted((p for p in stage_dir.glob("step-*") if p != path), key=lambda p: p.name)
    for old in done[: max(0, len(done) - (keep - 1))]:
        shutil.rmtree(old)


def initial_encoder(cfg: RetrieverTrainConfig, device: str) -> DenseEncoder:
    """``cfg.init``'s encoder (a retriever checkpoint or run folder) when given, else ``cfg.encoder``."""
    if cfg.init is None:
        return DenseEncoder.from_pretrained(cfg.encoder, device)
    retriever = build_retriever(cfg.init, device)
    if not isinstance(retriever, Retriever):
        raise ConfigError(
            f"init {cfg.init!r}: not a dense retriever checkpoint (or a run folder holding one)"
        )
    return retriever.encoder


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


# ------------------------------------------------------------------------------------ the loop


def run_stage(
    name: str,
    cfg: StageConfig,
    encoder: DenseEncoder,
    n_examples: int,
    batch_loss: BatchLoss,
    stage_dir: Path,
    *,
    config_text: str,
    resume: bool,
    drop_last: bool = False,
    evaluate: Callable[[Retriever], RetrievalScores] | None = None,
    deadline: float | None = None,
) -> tuple[int, int, float, RetrievalScores | None, bool]:
    """Train ``encoder`` in place on one stage's loss; returns (start step, last step, last loss, dev,
    out of time).

    ``deadline`` (a ``time.monotonic()`` time): stop after the last step that leaves time for another
    (and for a due dev evaluation), save a checkpoint to resume from and skip the final evaluation.

    ``batch_loss(example indices, step)`` gives the loss of a batch and extra fields to log. Batches
    are drawn from a permutation that depends only on (seed, epoch), so a run resumed from
    ``stage_dir``'s latest checkpoint sees the same batches as an uninterrupted one.
    """
    slow = bf16_cpu_warning(cfg.precision, str(encoder.device), f"{name}.precision")
    if slow:
        tqdm.write(f"warning: {slow}", file=sys.stderr)
    full, rest = divmod(n_examples, cfg.batch_size)
    steps_per_epoch = full if drop_last or rest == 0 else full + 1
    if steps_per_epoch == 0:
        raise ConfigError(f"{n_examples} training examples are fewer than one batch of {cfg.batch_size}")
    total = cfg.epochs * steps_per_epoch
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    params = list(encoder.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if not _no_decay(n)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in params if _no_decay(n)], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, round(cfg.warmup_ratio * total), total
    )
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    step = 0
    checkpoint = latest_checkpoint(stage_dir) if resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
        encoder.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        torch.set_rng_state(state["rng_torch"])
        if torch.cuda.is_available() and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        random.setstate(state["rng_python"])
        tqdm.write(f"{name}: resumed from {checkpoint} at step {step}/{total}", file=sys.stderr)
    start_step = step
    log_path = stage_dir / "log.jsonl"
    stage_dir.mkdir(parents=True, exist_ok=True)
    keep_until(log_path, start_step)
    encoder.train()
    loss_value = math.nan
    bar = tqdm(total=total, initial=step, desc=name, unit="step")
    started = time.monotonic()
    out_of_time, eval_s = False, 0.0
    while step < total and not out_of_time:
        step_started = time.monotonic()
        epoch, position = divmod(step, steps_per_epoch)
        order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        indices = [int(i) for i in order[position * cfg.batch_size : (position + 1) * cfg.batch_size]]
        with torch.autocast(encoder.device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss, extra = batch_loss(indices, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        grad_norm = torch.nn.utils.clip_grad_norm_(encoder.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        loss_value = float(loss.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", epoch=epoch)

        due = evaluate is not None and bool(cfg.eval_every) and step % cfg.eval_every == 0
        out_of_time = step < total and past_deadline(deadline, step_started, eval_s, due)
        final = step == total or out_of_time  # logged and saved, whatever the cadence
        eval_started = time.monotonic()
        dev = evaluate(Retriever(encoder)) if evaluate and due else None
        eval_s = time.monotonic() - eval_started if dev is not None else eval_s
        if step % cfg.log_every == 0 or final or dev is not None:
            entry: dict[str, Any] = {
                "step": step,
                "epoch": epoch,
                "loss": loss_value,
                "grad_norm": float(grad_norm),
                "lr": scheduler.get_last_lr()[0],
                **extra,
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            if dev is not None:
                entry["dev"] = dev.as_dict()
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        if step % cfg.save_every == 0 or final:
            state = {
                "model": encoder.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "rng_python": random.getstate(),
            }
            _save_checkpoint(stage_dir, step, state, config_text, cfg.keep_checkpoints)
    bar.close()
    if out_of_time:
        tqdm.write(
            f"{name}: stopped at step {step} of {total}: out of time; continue with --resume", file=sys.stderr
        )
        return start_step, step, loss_value, None, True
    final_dev = evaluate(Retriever(encoder)) if evaluate else None
    if final_dev is not None:
        with log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, "final": True, "dev": final_dev.as_dict()}) + "\n")
    return start_step, step, loss_value, final_dev, False


def contrastive_loss(
    cfg: WarmupConfig, encoder: DenseEncoder, examples: Sequence[WarmupExample]
) -> BatchLoss:
    """The warm-up's batch loss: in-batch contrastive against the pseudo-positives."""

    def loss(indices: Sequence[int], step: int) -> tuple[Tensor, dict[str, Any]]:
        batch = [examples[i] for i in indices]
        unique: dict[str, int] = {}
        for ex in batch:
            unique.setdefault(linearise(ex.positive), len(unique))
        labels = torch.tensor([unique[linearise(ex.positive)] for ex in batch], device=encoder.device)
        ctx, rec = encoder([ex.context for ex in batch], list(unique))
        return in_batch_contrastive(ctx.float(), rec.float(), cfg.temperature, labels), {
            "positives": len(unique)
        }

    return loss


# ------------------------------------------------------------------------------------- entry point


def train_retriever(
    cfg: RetrieverTrainConfig,
    paths: DataPaths,
    *,
    device: str = "cpu",
    resume: bool = False,
    command: str = "",
    deadline: float | None = None,
) -> TrainResult:
    """Run the configured stages and save the final retriever under ``<output_dir>/final``.

    ``deadline`` (a ``time.monotonic()`` time): a stage that runs out of time saves a checkpoint and
    the run returns with ``out_of_time`` set, before any later stage and without ``final/``;
    ``resume`` continues it."""
    out = Path(cfg.output_dir)
    if resume and (out / "config.yaml").is_file():
        check_same_config(cfg, out / "config.yaml")
    if not resume and any(out.glob("*/step-*")):
        raise ConfigError(
            f"{out} already holds checkpoints; pass --resume to continue, or another output_dir"
        )
    loader = get_loader(cfg.data.dataset)
    global_kb = large_kb(cfg.data.dataset, paths) if cfg.data.setting == "large" else None
    split = loader.load_split(cfg.data.train_split, paths)
    if cfg.data.limit_dialogues is not None:
        split = Split(split.dataset, split.split, split.dialogues[: cfg.data.limit_dialogues])
    examples, stats = warmup_examples(split, global_kb)
    if "warmup" in cfg.stages:
        skipped = f"{stats.no_match} without a matching record, {stats.unmapped} unmapped"
        tqdm.write(f"{stats.used} warm-up examples from {stats.turns} turns ({skipped})", file=sys.stderr)

    evaluate: Callable[[Retriever], RetrievalScores] | None = None
    if cfg.data.eval_split:
        eval_split = loader.load_split(cfg.data.eval_split, paths)

        def evaluate(retriever: Retriever) -> RetrievalScores:
            return score_split(retriever, eval_split, global_kb)

    provenance = {
        "command": command,
        "data_version": data_fingerprint(examples),
        "data": {"dataset": cfg.data.dataset, "split": cfg.data.train_split, **stats.__dict__},
        "mktod_version": __version__,
        "torch_version": str(torch.__version__),
        "device": device,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    dump_config(cfg, out / "config.yaml", provenance)
    config_text = (out / "config.yaml").read_text(encoding="utf-8")

    encoder = initial_encoder(cfg, device)
    start_step = steps = 0
    last_loss = math.nan
    dev: RetrievalScores | None = None
    for stage in cfg.stages:
        settings: StageConfig
        if stage == "warmup":
            settings, n = cfg.warmup, len(examples)
            loss = contrastive_loss(cfg.warmup, encoder, examples)
        else:
            mml_examples = build_examples(split, global_kb)
            settings, n = cfg.mml, len(mml_examples)
            loss = frozen_generator_mml(cfg.mml, Retriever(encoder), mml_examples, global_kb, device)
        start_step, steps, last_loss, dev, out_of_time = run_stage(
            stage,
            settings,
            encoder,
            n,
            loss,
            out / stage,
            config_text=config_text,
            resume=resume,
            drop_last=stage == "warmup",  # a batch of one has no in-batch negative
            evaluate=evaluate,
            deadline=deadline,
        )
        if out_of_time:
            return TrainResult(out / stage, start_step, steps, last_loss, None, out_of_time=True)

    final = out / "final"
    if final.exists():
        shutil.rmtree(final)
    Retriever(encoder).save(final)
    (final / "config.yaml").write_text(config_text, encoding="utf-8")
    if dev is not None:
        (final / "dev_scores.json").write_text(json.dumps(dev.as_dict(), indent=2) + "\n", encoding="utf-8")
    return TrainResult(final, start_step, steps, last_loss, dev)
