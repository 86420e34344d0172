"""`mktod train`, `mktod build-backbone` and `mktod evaluate --checkpoint`, registered by cli.py.

Handlers resolve paths and environment (the CLI's job) and call one library function each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mktod.cli_common import (
    DATASETS,
    add_config_options,
    add_max_time_option,
    add_path_options,
    add_training_options,
    command_line,
    deadline_of,
    non_negative_int,
    offline_data_paths,
    positive_int,
)
from mktod.errors import ConfigError
from mktod.generators.backbones import (  # no torch: cheap at parser build time
    CROSS_INITS,
    TOKENIZER_MODELS,
    TOKENIZER_TEXTS,
)


def cmd_train(args: argparse.Namespace) -> int:
    # --max-time counts from here: loading data and models is inside the budget a lent machine or a
    # job scheduler gives.
    started = time.monotonic()
    paths = offline_data_paths(args)  # before the imports below: the hub client reads it on import

    from mktod.config import load_config
    from mktod.distributed import Launch
    from mktod.train import result_dict, train
    from mktod.train_config import TrainConfig

    cfg = load_config(TrainConfig, Path(args.config), list(args.set or []))
    # Several processes when started by torchrun or `accelerate launch` (WORLD_SIZE > 1): data parallel.
    launch = Launch.from_env(os.environ)
    deadline = deadline_of(started, args.max_time)
    result = train(
        cfg,
        paths,
        device=args.device,
        resume=args.resume,
        command=command_line(),
        launch=launch,
        deadline=deadline,
    )
    if launch.rank != 0:  # one summary per run, not one per process
        return 0
    out = result_dict(result)
    out["losses"] = {k: round(v, 4) for k, v in result.losses.items()}
    out["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out, indent=2))
    return 0


def cmd_record_budget(args: argparse.Namespace) -> int:
    paths = offline_data_paths(args)

    from mktod.config import load_config
    from mktod.datasets import get_loader
    from mktod.evaluate_retriever import large_kb
    from mktod.generators.base import build_generator
    from mktod.record_budget import format_report, measure, split_records
    from mktod.train_config import TrainConfig

    cfg = load_config(TrainConfig, Path(args.config), list(args.set or []))
    data = cfg.data
    loader = get_loader(data.dataset)
    global_kb = large_kb(data.dataset, paths) if data.setting == "large" else None
    # The generator's own rendering and tokenizer (meta tokens added in prefix mode): what training cuts.
    generator = build_generator(cfg.generator, cfg.meta, "cpu")
    tokens = getattr(generator, "record_tokens", None)
    if tokens is None:
        raise ConfigError(f"generator.kind {cfg.generator.kind!r} sends records whole: no budget to measure")
    cap = cfg.generator.max_record_tokens
    # Every split by default: test dialogues bring entities (and longer records) training never shows.
    names = args.split or [data.train_split, data.dev_split or "dev", "test"]
    reports = []
    for name in dict.fromkeys(names):
        split = loader.load_split(name, paths)
        report = measure(split_records(split, global_kb), tokens, cap, cfg.retriever.k)
        reports.append((name, report))
        if not args.json:
            title = (
                f"{data.dataset} {name}, {data.setting} KBs, {cfg.meta.mode} meta knowledge, "
                f"{cfg.generator.kind} generator {cfg.generator.model}"
            )
            print(format_report(report, title) + "\n")
    if args.json:
        where = {"dataset": data.dataset, "setting": data.setting, "meta_mode": cfg.meta.mode}
        splits = [{"split": name, **report.summary()} for name, report in reports]
        print(json.dumps({**where, "splits": splits}, indent=2))
    return 0


def cmd_export_pipeline(args: argparse.Namespace) -> int:
    from mktod.export import export_pipeline, folder_digest, folder_size

    out = export_pipeline(
        Path(args.checkpoint),
        Path(args.out),
        args.retriever,
        args.note,
        command_line(),
        args.force,
        retriever_bits=args.retriever_bits,
    )
    info = {"path": str(out), "bytes": folder_size(out), "sha256": folder_digest(out)}
    print(json.dumps(info, indent=2))
    return 0


def cmd_build_backbone(args: argparse.Namespace) -> int:
    paths = offline_data_paths(args)

    from mktod.encoder import resolve_model
    from mktod.generators.backbones import build_bert2bert, build_t5_from_scratch, dataset_texts

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ConfigError(f"{out} exists and is not empty; pass --force to overwrite it")
    if args.kind == "t5-scratch":
        if not args.dataset:
            raise ConfigError("--kind t5-scratch trains its tokenizer on a dataset: pass --dataset")
        texts = dataset_texts(args.dataset, paths, texts_of=args.tokenizer_texts)
        settings = {"dataset": args.dataset, "tokenizer_texts": args.tokenizer_texts}
        built = build_t5_from_scratch(
            texts,
            out,
            size=args.size,
            vocab_size=args.vocab_size,
            seed=args.seed,
            settings=settings,
            tokenizer_model=args.tokenizer,
        )
    else:
        built = build_bert2bert(resolve_model(args.encoder), out, cross_attention=args.cross_attention)
    info = {"path": str(built.path), "kind": built.kind, "parameters": built.parameters}
    print(json.dumps({**info, "vocab_size": built.vocab_size}, indent=2))
    return 0


def decoding_of(generator: object) -> dict[str, int]:
    """A generator's decoding settings (none for one without a config, such as a chat LLM)."""
    cfg = getattr(generator, "cfg", None)
    if cfg is None:
        return {}
    return {"num_beams": cfg.num_beams, "no_repeat_ngram_size": cfg.no_repeat_ngram_size}


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Generate a split with a trained checkpoint, score it, write outputs, print ONE JSON object."""
    paths = offline_data_paths(args)

    from mktod.checkpoint import Decoding, load_pipeline, load_spec
    from mktod.datasets import get_loader
    from mktod.evaluate import evaluate_pipeline
    from mktod.evaluate_retriever import large_kb
    from mktod.generators.base import record_cuts
    from mktod.metrics import EntityVocab

    checkpoint = Path(args.checkpoint)
    spec = load_spec(checkpoint)
    if spec.dataset and spec.dataset != args.dataset:
        raise ConfigError(f"{checkpoint} was trained on {spec.dataset}, not {args.dataset}")
    setting = args.setting or spec.setting
    k: int = spec.k if args.k is None else args.k
    started = time.monotonic()
    loader = get_loader(args.dataset)
    split = loader.load_split(args.split, paths)
    vocab = EntityVocab.from_file(args.dataset, loader.entity_file(paths))
    global_kb = large_kb(args.dataset, paths) if setting == "large" else None
    batch_size = getattr(args, "batch_size", None) or 16
    decoding = Decoding(args.num_beams, args.no_repeat_ngram)
    pipeline = load_pipeline(checkpoint, args.device, batch_size=batch_size, k=k, decoding=decoding)
    # Beside the checkpoint, not inside it: training replaces best/ and last/ wholesale. A pipeline file
    # (configs/pipelines/*.yaml) writes under runs/eval, keeping the configs folder clean.
    name = f"{checkpoint.stem}-{args.dataset}-{args.split}-{setting}"
    home = checkpoint.parent if checkpoint.is_dir() else Path("runs")
    out_dir = Path(args.out) if args.out else home / "eval" / name
    result = evaluate_pipeline(pipeline, split, vocab, out_dir, global_kb=global_kb, limit=args.limit)
    r = result.responses
    cuts = record_cuts(pipeline.generator)
    if cuts is not None and (warning := cuts.warning()):
        print(f"warning: {warning}", file=sys.stderr)
    summary: dict[str, object] = {
        "dataset": args.dataset,
        "split": args.split,
        "setting": setting,
        "checkpoint": str(checkpoint),
        "k": k,
        "meta": spec.meta.mode,
        # The decoding the responses came from (the checkpoint's, or the options'), to reproduce them.
        **decoding_of(pipeline.generator),
        "bleu": round(r.bleu, 2),
        "entity_f1": round(r.entity_f1, 2),
        "entity_precision": round(r.entity_precision, 2),
        "entity_recall": round(r.entity_recall, 2),
        **{f"recall@{k}": round(v, 2) for k, v in result.retrieval.recall.items()},
        "turns": result.turns,
        **(cuts.summary() if cuts is not None else {}),
        "wall_s": round(time.monotonic() - started, 1),
        "predictions": str(result.predictions_path),
        "records": str(result.records_path),
    }
    run = {**summary, "command": command_line()}
    (out_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0


# ------------------------------------------------------------------------------------------- parsers


def _has(parser: argparse.ArgumentParser, option: str) -> bool:
    return any(option in action.option_strings for action in parser._actions)


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--checkpoint`` (and whichever of --setting/--k/--limit/--out/--device/--batch-size are missing).

    The ``evaluate`` parser may already have some of them (the chat-LLM options); they are shared.
    """
    g = parser.add_argument_group("generate with a trained checkpoint instead of reading --predictions")
    g.add_argument(
        "--checkpoint",
        help="a checkpoint folder written by `mktod train` (runs/NAME/best), or a pipeline file "
        "(configs/pipelines/*.yaml)",
    )
    if not _has(parser, "--setting"):
        g.add_argument(
            "--setting", choices=["condensed", "large"], help="KB setting (default: the checkpoint's)"
        )
    if not _has(parser, "--k"):
        g.add_argument(
            "--k", type=positive_int, help="records retrieved per turn (default: the checkpoint's)"
        )
    if not _has(parser, "--limit"):
        g.add_argument("--limit", type=int, help="only the first N system turns of the split")
    if not _has(parser, "--out"):
        g.add_argument("--out", help="output folder (default RUN/eval/CHECKPOINT-DATASET-SPLIT-SETTING)")
    if not _has(parser, "--device"):
        g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    if not _has(parser, "--batch-size"):
        g.add_argument("--batch-size", type=int, default=16, help="turns generated per batch (default 16)")
    g.add_argument("--num-beams", type=positive_int, help="beam width (default: the checkpoint's; 1: greedy)")
    g.add_argument(
        "--no-repeat-ngram",
        type=non_negative_int,
        metavar="N",
        help="forbid a response to repeat any N-gram of its own, against the loops of greedy decoding "
        "(default: the checkpoint's generator.no_repeat_ngram_size; 0: off, as in the paper)",
    )


def add_train_commands(subparsers: Any) -> None:
    """Register ``train``, ``record-budget``, ``export-pipeline`` and ``build-backbone`` on the main
    parser's subparsers."""
    train = subparsers.add_parser(
        "train", help="train retriever and generator jointly (NLL + MML), resumable"
    )
    add_path_options(train)
    add_training_options(train, "configs/camrest-condensed-prefix.yaml", "optim.lr=5e-5")
    add_max_time_option(train)
    train.set_defaults(handler=cmd_train)

    rb = subparsers.add_parser(
        "record-budget",
        help="how a training config's generator.max_record_tokens cuts the dataset's records, and "
        "which fields it leaves out",
    )
    add_path_options(rb)
    add_config_options(rb, "configs/camrest-condensed-prompt.yaml", "generator.max_record_tokens=104")
    rb.add_argument(
        "--split",
        action="append",
        help="a split to measure (repeatable; default: the config's training and dev splits, and test)",
    )
    rb.add_argument("--json", action="store_true", help="machine-readable output")
    rb.set_defaults(handler=cmd_record_budget)

    ex = subparsers.add_parser(
        "export-pipeline",
        help="copy a checkpoint into a small shippable pipeline folder (optionally another retriever)",
    )
    ex.add_argument("--checkpoint", required=True, help="a `mktod train` checkpoint, e.g. runs/NAME/best")
    ex.add_argument("--out", required=True, help="folder to write, e.g. models/NAME")
    ex.add_argument(
        "--retriever",
        default="",
        help="ship this retriever spec instead of the trained weights, e.g. encoder:all-MiniLM-L6-v2",
    )
    ex.add_argument(
        "--retriever-bits",
        type=int,
        choices=[4, 8],
        help="ship the trained retriever as a quantised delta over its base encoder, BITS bits a weight "
        "(MiniLM: about 6 MB at 4, 12 MB at 8, against 90 MB of full weights)",
    )
    ex.add_argument("--note", default="", help="a paragraph for the folder's README.md")
    ex.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    ex.set_defaults(handler=cmd_export_pipeline)

    bb = subparsers.add_parser("build-backbone", help="build an offline generator backbone folder")
    add_path_options(bb)
    bb.add_argument("--kind", required=True, choices=["t5-scratch", "bert2bert"])
    bb.add_argument("--dataset", choices=DATASETS, help="t5-scratch: the training split the tokenizer learns")
    bb.add_argument("--out", required=True, help="folder to write, e.g. runs/backbones/camrest-t5-small")
    bb.add_argument("--size", choices=["tiny", "small"], default="small", help="t5-scratch model size")
    bb.add_argument("--vocab-size", type=int, default=8000, help="t5-scratch tokenizer size (upper bound)")
    bb.add_argument("--seed", type=int, default=0, help="t5-scratch initialisation seed")
    bb.add_argument(
        "--tokenizer-texts",
        choices=TOKENIZER_TEXTS,
        default="inputs",
        help="t5-scratch: train the tokenizer on what the generator reads (inputs: utterances, records, "
        "the context and passage labels and the prompt meta knowledge) or on the dialogues alone "
        "(utterances and records: the reported T5 rows' tokenizer)",
    )
    bb.add_argument(
        "--tokenizer",
        choices=TOKENIZER_MODELS,
        default="bpe",
        help="t5-scratch: SentencePiece's algorithm for the tokenizer: bpe (default: frequent words become "
        "one piece) or unigram (the reported T5 rows' tokenizer, which splits many frequent words on "
        "data this small)",
    )
    bb.add_argument("--encoder", default="all-MiniLM-L6-v2", help="bert2bert: BERT-style model to warm-start")
    bb.add_argument(
        "--cross-attention",
        choices=CROSS_INITS,
        default="self",
        help="bert2bert: the decoder's new cross-attention starts as a copy of the layer's "
        "self-attention (default: it reads the encoder from the first step), or at random",
    )
    bb.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    bb.set_defaults(handler=cmd_build_backbone)
