"""Tiny models, data and configs for the joint-training tests: nothing is downloaded.

The 3-dialogue CamRest sample of retriever_helpers, its entity list, a random 2-layer BERT for the
retriever and a T5 with d_model = 32 whose unigram tokenizer is trained on the sample.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from retriever_helpers import CAMREST_SAMPLE, save_tiny_model, write_camrest_sample
from transformers import T5Config, T5ForConditionalGeneration

from mktod.config import dump_config, load_config
from mktod.datasets import DataPaths
from mktod.generators.backbones import train_unigram_tokenizer
from mktod.train_config import TrainConfig


def paper_k(dataset: str, setting: str) -> int:
    """Records per turn in the paper (METHOD.md §2): 6 / 8 / 6 on MWOZ / SMD / CamRest condensed KBs,
    7 on the dataset-level KB. Written out here, not read from mktod, so the configs are checked
    against the paper."""
    return 7 if setting == "large" else {"mwoz": 6, "camrest": 6, "smd": 8}[dataset]


ENTITIES = {
    "address": ["regent_street_city_centre", "finders_corner_newmarket_road", "191_histon_road_chesterton"],
    "area": ["centre", "east", "north"],
    "food": ["italian", "international", "chinese"],
    "phone": ["01223_323737", "01223_812660", "01223_350688"],
    "pricerange": ["cheap", "moderate"],
    "name": ["pizza_hut_city_centre", "the_missing_sock", "golden_wok"],
}


def write_data(root: Path) -> DataPaths:
    """The sample as CamRest train/dev/test, with an entity list so dev can be scored."""
    write_camrest_sample(root / "data")
    entities = root / "data" / "camrest" / "eer_txt" / "camrest_entities.json"
    entities.write_text(json.dumps(ENTITIES), encoding="utf-8")
    return DataPaths(root / "data", root / "cache")


def path_args(paths: DataPaths) -> list[str]:
    """The command-line options that point a command at ``paths``."""
    return ["--data-dir", str(paths.data_dir), "--cache-dir", str(paths.cache_dir)]


def save_tiny_t5(path: Path, seed: int = 0) -> Path:
    """A T5 with d_model 32 and a unigram tokenizer trained on the sample, saved as a model folder."""
    texts = [line for line in CAMREST_SAMPLE.splitlines() if line]
    texts += [t.replace("_", " ") for t in texts]
    tokenizer = train_unigram_tokenizer(texts, vocab_size=300)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config.decoder_start_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_models(root: Path) -> tuple[Path, Path]:
    bert, t5 = root / "tiny-bert", root / "tiny-t5"
    if not bert.exists():
        save_tiny_model(bert)
    if not t5.exists():
        save_tiny_t5(t5)
    return bert, t5


def tiny_config(root: Path, out: str, *overrides: str) -> TrainConfig:
    """A few-step CamRest run on the tiny models; ``overrides`` as on the command line."""
    bert, t5 = make_models(root)
    base = [
        f"output_dir={root / out}",
        "data.dataset=camrest",
        "data.setting=condensed",
        f"retriever.encoder.model={bert}",
        "retriever.encoder.max_context_length=64",
        "retriever.encoder.max_record_length=32",
        "retriever.k=2",
        "retriever.lr=0.001",
        f"generator.model={t5}",
        "generator.max_context_tokens=48",
        "generator.max_record_tokens=24",
        "generator.max_target_tokens=8",
        "loss.mml_temperature=0.1",
        "optim.lr=0.001",
        "optim.batch_size=2",
        "optim.grad_accum=2",
        "optim.max_steps=3",
        "optim.eval_every=2",
        "optim.eval_limit=3",
        "optim.save_every=2",
        "optim.log_every=1",
    ]
    return load_config(TrainConfig, None, [*base, *overrides])


def write_tiny_config(root: Path, out: str, *overrides: str) -> tuple[Path, list[str]]:
    """``tiny_config`` written to ``root/<out>.yaml`` over the sample data: the config file and the path
    options, for tests that go through the command line."""
    paths = write_data(root)
    config = root / f"{out}.yaml"
    dump_config(tiny_config(root, out, *overrides), config)
    return config, path_args(paths)


def crash_after_step(step: int, save: Callable[..., Path]) -> Callable[..., Path]:
    """A save_checkpoint that saves, then stops the run (KeyboardInterrupt) once ``last/`` holds ``step``:
    an interrupted run for the resume tests."""

    def crash(directory: Path, *args: Any, **kwargs: Any) -> Path:
        path = save(directory, *args, **kwargs)
        state = kwargs.get("state") if "state" in kwargs else (args[4] if len(args) > 4 else None)
        if state is not None and state["step"] == step:
            raise KeyboardInterrupt
        return path

    return crash
