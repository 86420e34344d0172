"""Joint training of retriever and generator (METHOD.md §3, §6): L = α·NLL + β·MML (+ γ·CTR).

One loop, :func:`train`, reads top to bottom: batch -> retrieve (no grad) -> tag -> re-score (grad) ->
generator likelihoods -> loss -> step -> log -> evaluate -> save. The pieces it calls are the ones the
pipeline uses at inference (Retriever, MetaConfig.tag, the seq2seq or causal generator), not copies.

Layout of ``output_dir``: ``config.yaml`` (resolved config + provenance), ``log.jsonl`` (losses, dev
scores), ``eval/step-NNNNNN/`` (dev predictions and records), ``last/`` (resumable: a pipeline checkpoint
plus ``state.pt``) and ``best/`` (the checkpoint with the best dev Entity F1), see :mod:`mktod.checkpoint`.

One device per process (``device`` is a parameter; bf16 autocast is a config option). The paper's
effective batch of 64 turns is ``batch_size × grad_accum``, whatever the number of processes: under
``torchrun`` or ``accelerate launch`` (``launch``) each micro-batch is the one a single process would take
and every process trains on its share of its turns. Gradients are summed across processes before
clipping (:mod:`mktod.distributed`; no DDP wrapper) and each loss term is divided by the whole
micro-batch's number of turns, so losses and weights match a one-process run up to float error. Rank 0
alone writes (config, log, checkpoints) and evaluates on dev; every process loads ``last/`` to resume.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mktod import __version__
from mktod.checkpoint import (
    SCORES_FILE,
    PipelineSpec,
    is_complete,
    load_retriever,
    load_state,
    save_checkpoint,
)
from mktod.config import check_same_config, dump_config
from mktod.datasets import DataPaths, get_loader
from mktod.deadline import past_deadline
from mktod.distributed import SINGLE, Group, Launch, process_group
from mktod.encoder import DenseEncoder
from mktod.errors import ConfigError
from mktod.evaluate import evaluate_pipeline
from mktod.evaluate_retriever import large_kb
from mktod.generators.base import (
    GeneratorConfig,
    GeneratorInput,
    TrainableGenerator,
    build_generator,
    record_cuts,
)
from mktod.meta import MetaConfig
from mktod.metrics import EntityVocab
from mktod.mml_diag import MmlMeter, gold_mask
from mktod.pipeline import Pipeline, PipelineConfig
from mktod.retriever import Retriever, build_retriever
from mktod.runlog import keep_until
from mktod.sysinfo import bf16_cpu_warning
from mktod.train_config import RetrieverSection, TrainConfig
from mktod.train_data import (
    build_examples,
    data_fingerprint,
    donor_kbs,
    record_scores,
    retrieve_records,
    retrieved_mask,
)
from mktod.train_loss import global_counts, joint_loss
from mktod.types import Split

# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    last: Path
    best: Path | None  # None when no dev split is configured
    start_step: int  # 0, or the step a resumed run continued from
    steps: int
    losses: dict[str, float]  # mean of the last step's micro-batches: loss, nll, mml, ctr
    best_entity_f1: float | None
    best_step: int | None
    out_of_time: bool = False  # stopped before optim.max_steps by the deadline; --resume continues


def _shared_best(
    group: Group, best_f1: float | None, best_step: int | None
) -> tuple[float | None, int | None]:
    """Rank 0's best dev score (it alone evaluates), on every process: all keep the same state."""
    f1, at = group.broadcast(
        [math.nan if best_f1 is None else best_f1, -1 if best_step is None else best_step]
    )
    return (None if math.isnan(f1) else f1), (None if at < 0 else int(at))


def _check_launch(launch: Launch, batch_size: int) -> None:
    if launch.world_size > batch_size:
        raise ConfigError(
            f"{launch.world_size} processes but optim.batch_size is {batch_size}: each process takes a share "
            f"of every micro-batch's turns, so launch at most {batch_size} processes, or raise "
            "optim.batch_size (and lower optim.grad_accum to keep batch_size × grad_accum turns per step)"
        )


def _param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    # Trainable parameters only: with a LoRA adapter the base model is frozen. Norm weights (LayerNorm,
    # T5's layer_norm, Llama's RMSNorm "...norm") and biases are not decayed.
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if n.endswith("bias") or "norm" in n.lower()]
    decay = [p for n, p in named if not (n.endswith("bias") or "norm" in n.lower())]
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]


def resumable_generator(
    gen: GeneratorConfig, meta: MetaConfig, last_dir: Path | None, device: str
) -> TrainableGenerator:
    """The generator to train: from ``gen``, or from ``last_dir``'s weights when resuming.

    A LoRA run resumes by building the same fresh adapter on the base model and loading the saved
    adapter weights into it (loading the adapter folder directly would freeze it).
    """
    lora = gen.kind == "causal" and gen.lora.r > 0
    if last_dir is not None and not lora:
        gen = replace(gen, model=str(last_dir / "generator"))
    generator = build_generator(gen, meta, device)
    if not isinstance(generator, TrainableGenerator):
        raise ConfigError(f"generator.kind {gen.kind!r} cannot be trained; use seq2seq or causal")
    if last_dir is not None and lora:
        generator.load_adapter_weights(last_dir / "generator")  # type: ignore[attr-defined]
    return generator


def initial_retriever(section: RetrieverSection, device: str) -> Retriever:
    if section.init is None:
        encoder = DenseEncoder.from_pretrained(section.encoder, device)
        return Retriever(encoder, batch_size=section.batch_size)
    retriever = build_retriever(section.init, device, section.batch_size)
    if not isinstance(retriever, Retriever):
        raise ConfigError(
            f"retriever.init {section.init!r}: joint training needs a dense retriever checkpoint"
        )
    return retriever


# ------------------------------------------------------------------------------------------- the loop


def train(
    cfg: TrainConfig,
    paths: DataPaths,
    device: str = "cpu",
    resume: bool = False,
    command: str = "",
    launch: Launch = SINGLE,
    deadline: float | None = None,
) -> TrainResult:
    """Train jointly from step 0 (or ``last/`` with ``resume``); returns where the checkpoints are.

    ``launch``: this process's place among several (one per device) training one model together.
    ``deadline``: a ``time.monotonic()`` time by which to end. The run stops after the last step that
    leaves time for another step and a dev evaluation (judged by the step just taken and the last
    evaluation), then evaluates on dev, saves ``last/`` and returns with ``out_of_time`` set, as at
    ``optim.max_steps``; ``resume`` continues it. For a machine lent for a fixed time or a scheduler's
    time limit. Saving the checkpoints comes on top: leave it a little room.
    """
    _check_launch(launch, cfg.optim.batch_size)
    device = launch.device(device)
    with process_group(launch, device) as group:
        return _train(cfg, paths, device, resume, command, group, deadline)


def _out_of_time(
    group: Group, deadline: float | None, step_started: float, eval_s: float, evaluates_now: bool
) -> bool:
    """:func:`mktod.deadline.past_deadline` as rank 0 judges it (its clock, its dev evaluations), on
    every process, so that all stop at the same step."""
    if deadline is None:
        return False
    return bool(group.broadcast([float(past_deadline(deadline, step_started, eval_s, evaluates_now))])[0])


def _train(
    cfg: TrainConfig,
    paths: DataPaths,
    device: str,
    resume: bool,
    command: str,
    group: Group,
    deadline: float | None,
) -> TrainResult:
    out = Path(cfg.output_dir)
    last_dir, best_dir = out / "last", out / "best"
    if is_complete(last_dir) and not resume:
        raise ConfigError(
            f"{out} already holds a checkpoint; pass --resume to continue, or another output_dir"
        )
    resuming = resume and is_complete(last_dir)
    if resuming:
        check_same_config(cfg, last_dir / "config.yaml")
    opt, large, main = cfg.optim, cfg.data.setting == "large", group.is_main
    torch.manual_seed(opt.seed)  # random parts of the models (new embeddings, cross-attention) too

    # Data: one example per system turn; the dev split is scored through the inference pipeline.
    loader = get_loader(cfg.data.dataset)
    global_kb = large_kb(cfg.data.dataset, paths) if large else None
    split = loader.load_split(cfg.data.train_split, paths)
    if cfg.data.limit_dialogues is not None:
        split = Split(split.dataset, split.split, split.dialogues[: cfg.data.limit_dialogues])
    examples = build_examples(split, global_kb)
    donors = donor_kbs(examples) if not large else []
    dev = loader.load_split(cfg.data.dev_split, paths) if cfg.data.dev_split else None
    vocab = EntityVocab.from_file(cfg.data.dataset, loader.entity_file(paths)) if dev else None
    if not examples:
        raise ConfigError(f"{cfg.data.dataset} {cfg.data.train_split}: no training turns")

    # Models, optimizer and schedule; a resumed run reloads all of them from last/ (every process).
    retriever = load_retriever(last_dir, device) if resuming else initial_retriever(cfg.retriever, device)
    retriever.batch_size = cfg.retriever.batch_size
    generator = resumable_generator(cfg.generator, cfg.meta, last_dir if resuming else None, device)
    groups = _param_groups(generator.model, opt.lr, opt.weight_decay)
    if not cfg.retriever.freeze:
        groups += _param_groups(retriever.encoder, cfg.retriever.lr, opt.weight_decay)
    params = [p for g in groups for p in g["params"]]
    retriever_params = [p for p in retriever.encoder.parameters() if p.requires_grad]
    group.broadcast_params(params)
    optimizer = torch.optim.AdamW(groups)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, round(opt.warmup_ratio * opt.max_steps), opt.max_steps
    )
    step, best_f1, best_step = 0, None, None
    if resuming:
        state = load_state(last_dir)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best_f1, best_step = int(state["step"]), state["best_f1"], state["best_step"]
        torch.set_rng_state(state["rng_torch"])
        if torch.cuda.is_available() and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if main:
            tqdm.write(f"resumed from {last_dir} at step {step}/{opt.max_steps}", file=sys.stderr)
    start_step = step

    provenance = {
        "command": command,
        "data_version": data_fingerprint(examples),
        "data": {"dataset": cfg.data.dataset, "split": cfg.data.train_split, "turns": len(examples)},
        "mktod_version": __version__,
        "torch_version": str(torch.__version__),
        "device": device,
        "processes": group.world_size,
        "start_step": start_step,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    log_path = out / "log.jsonl"
    config_text = ""  # rank 0 alone writes config.yaml, the log and checkpoints
    if main:
        dump_config(cfg, out / "config.yaml", provenance)
        config_text = (out / "config.yaml").read_text(encoding="utf-8")
        keep_until(log_path, start_step)
    spec = PipelineSpec(
        cfg.data.dataset, cfg.retriever.k, cfg.data.setting, cfg.meta, cfg.generator, cfg.generator.model
    )
    need_scores = cfg.loss.use_mml and not cfg.retriever.freeze
    need_single = cfg.loss.use_mml or cfg.loss.use_ctr
    batches_per_epoch = math.ceil(len(examples) / opt.batch_size)
    autocast = torch.autocast(torch.device(device).type, torch.bfloat16, enabled=opt.precision == "bf16")
    slow = bf16_cpu_warning(opt.precision, device, "optim.precision")
    if slow and main:
        tqdm.write(f"warning: {slow}", file=sys.stderr)
    index_step: int | None = None
    last: dict[str, float] = {}
    meter = MmlMeter()  # what MML asks of the retriever, logged as "mml_diag" (rank 0's share of turns)
    cuts, cuts_told = record_cuts(generator), False  # records cut at generator.max_record_tokens
    generator.model.train()
    retriever.encoder.train(not cfg.retriever.freeze)
    bar = tqdm(total=opt.max_steps, initial=step, desc="joint training", unit="step", disable=not main)
    started = time.monotonic()
    out_of_time, eval_s = False, 0.0  # eval_s: how long the last dev evaluation took (rank 0)
    while step < opt.max_steps and not out_of_time:
        step_started = time.monotonic()
        # Large-scale: top-K comes from an index of KB embeddings refreshed every refresh_every steps.
        if (
            large
            and global_kb is not None
            and (index_step is None or step - index_step >= cfg.retriever.refresh_every)
        ):
            retriever.build_index(global_kb)
            index_step = step
        sums: dict[str, float] = {}
        for micro in range(opt.grad_accum):
            # Batch order depends only on (seed, epoch): a resumed run sees the same batches.
            m = step * opt.grad_accum + micro
            epoch, position = divmod(m, batches_per_epoch)
            order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(opt.seed + epoch))
            batch = [examples[i] for i in order[position * opt.batch_size : (position + 1) * opt.batch_size]]

            # Every process retrieves for the whole micro-batch (no gradient, cheap next to the
            # generator): donor draws are seeded by a turn's place in it, so each process's share gets
            # the records a one-process run would give it.
            records = retrieve_records(
                retriever, batch, cfg.retriever.k, cfg.meta, donors, seed=f"{opt.seed}:{m}"
            )
            batch, records = group.shard(batch), group.shard(records)
            if not batch:  # the last micro-batch of an epoch can be shorter than the number of processes
                global_counts(group, 0, None)
                continue
            # The records MML and CTR range over: the retrieved ones, and the negative by default.
            retrieved = retrieved_mask(records, cfg.loss.mml_negative)
            inputs = [GeneratorInput(ex.context, recs) for ex, recs in zip(batch, records, strict=True)]
            targets = [ex.response for ex in batch]
            with autocast:
                scores = (
                    record_scores(retriever, [ex.query for ex in batch], records)[0] if need_scores else None
                )
                if need_single:
                    lik = generator.joint_and_single_logprobs(
                        inputs, targets, with_no_entity=cfg.loss.use_ctr, single_dropout=cfg.loss.mml_dropout
                    )
                    joint = lik.joint
                else:  # NLL only (the "w/o MML" ablation): no single-record decoder pass
                    lik, joint = None, generator.joint_logprobs(inputs, targets)
            if main and scores is not None and lik is not None:  # rank 0 alone writes the log
                meter.add(
                    scores.detach(),
                    lik.single.detach(),
                    lik.mask.cpu() & retrieved,
                    gold_mask(records, [ex.gold for ex in batch]),
                    cfg.loss.mml_temperature,
                )
            counts = global_counts(group, len(batch), retrieved)
            terms = joint_loss(cfg.loss, joint, lik, scores, counts, retrieved)
            (terms.total / opt.grad_accum).backward()  # type: ignore[no-untyped-call]
            for name in ("total", "nll", "mml", "ctr"):
                value = getattr(terms, name)
                if value is not None:
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / opt.grad_accum

        group.sync_grads(params)  # the sum of the processes' shares: the whole step's gradient
        retriever_grads = [p.grad for p in retriever_params if p.grad is not None]
        retriever_norm = (  # before clipping, which scales every parameter's gradient alike
            float(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in retriever_grads]))
            )
            if retriever_grads and not cfg.retriever.freeze
            else None
        )
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, opt.grad_clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        due = dev is not None and step % opt.eval_every == 0
        out_of_time = step < opt.max_steps and _out_of_time(group, deadline, step_started, eval_s, due)
        final = step == opt.max_steps or out_of_time  # evaluated, logged and saved, whatever the cadence
        sums = group.sum_present(sums, ("total", "nll", "mml", "ctr"))  # each share is its part of the mean
        last = {("loss" if k == "total" else k): v for k, v in sums.items()}
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()})

        rates = scheduler.get_last_lr()  # [generator decay, no decay, retriever decay, no decay]
        entry: dict[str, Any] = {
            "step": step,
            **last,
            "grad_norm": grad_norm,
            **({"grad_norm_retriever": retriever_norm} if retriever_norm is not None else {}),
            "lr": rates[0],
            "lr_retriever": 0.0 if cfg.retriever.freeze else rates[-1],
        }
        evaluating = dev is not None and vocab is not None and (step % opt.eval_every == 0 or final)
        if evaluating and main and dev is not None and vocab is not None:
            eval_started = time.monotonic()
            pipeline = Pipeline(
                retriever,
                generator,
                cfg.meta,
                PipelineConfig(cfg.retriever.k, cfg.data.setting, opt.eval_batch_size),
            )
            result = evaluate_pipeline(
                pipeline, dev, vocab, out / "eval" / f"step-{step:06d}", global_kb, opt.eval_limit
            )
            scores_json = {
                "step": step,
                **result.responses.as_dict(),
                **{f"recall@{k}": v for k, v in result.retrieval.recall.items()},
            }
            entry["dev"] = scores_json
            f1, bleu = result.responses.entity_f1, result.responses.bleu
            tqdm.write(f"step {step}: dev entity F1 {f1:.2f} BLEU {bleu:.2f}", file=sys.stderr)
            if best_f1 is None or f1 > best_f1:
                best_f1, best_step = f1, step
                extra = {SCORES_FILE: json.dumps(scores_json, indent=2) + "\n"}
                save_checkpoint(
                    best_dir, generator, retriever, spec, config_text, extra_files=extra, step=step
                )
            eval_s = time.monotonic() - eval_started  # with saving best/: what --max-time keeps room for
        if evaluating:
            if large and global_kb is not None and not main:  # as rank 0's evaluation just did
                retriever.build_index(global_kb)
            index_step = step if large else index_step  # evaluation re-indexed the KB with current weights
            best_f1, best_step = _shared_best(group, best_f1, best_step)  # the others wait here
        if main and (step % opt.log_every == 0 or final or "dev" in entry):
            entry["elapsed_s"] = round(time.monotonic() - started, 1)
            diag = meter.flush()  # the means since the last written entry
            if diag:
                entry["mml_diag"] = diag
            if cuts is not None and cuts.seen:
                entry["records_cut"] = round(cuts.share, 2)  # percent of the records rendered so far
                warning = cuts.warning()
                if warning and not cuts_told:
                    tqdm.write(f"warning: {warning}", file=sys.stderr)
                    cuts_told = True
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        if step % opt.save_every == 0 or final:
            if main:
                state = {
                    "step": step,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best_f1": best_f1,
                    "best_step": best_step,
                    "rng_torch": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                }
                save_checkpoint(last_dir, generator, retriever, spec, config_text, state, step=step)
            group.barrier()  # no process goes on (or returns) before last/ is complete
            if large and global_kb is not None:  # what a run resumed from here will index first
                retriever.build_index(global_kb)
                index_step = step
    bar.close()
    if out_of_time and main:
        tqdm.write(
            f"stopped at step {step} of {opt.max_steps}: out of time; continue with --resume", file=sys.stderr
        )
    best = best_dir if is_complete(best_dir) else None
    return TrainResult(out, last_dir, best, start_step, step, last, best_f1, best_step, out_of_time)


def result_dict(result: TrainResult) -> dict[str, Any]:
    """TrainResult as JSON-friendly data (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
