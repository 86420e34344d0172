"""Pipeline checkpoints: a folder that fully defines a :class:`~mktod.pipeline.Pipeline`.

Layout (written by :func:`save_checkpoint`, read by :func:`load_pipeline`)::

    generator/      save_pretrained model + tokenizer (the meta tokens included); for a LoRA run only
                    the adapter + tokenizer, and pipeline.yaml names the base model
    retriever/      a retriever checkpoint (mktod.retriever.Retriever.save; build_retriever reads it)
    pipeline.yaml   PipelineSpec: dataset, k, setting, meta config, generator config
    config.yaml     the training config with its provenance (command, data version), when from training
    state.pt        resumable training state (optimizer, scheduler, step, RNG), in ``last/`` only
    step.json       the training step the weights are from, when from training (``checkpoint_step``)
    COMPLETE        written last; a folder without it is an interrupted save and is never loaded

Paths inside ``pipeline.yaml`` are relative to the folder, so a checkpoint can be moved or copied.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mktod.config import dump_config, load_config
from mktod.errors import ConfigError
from mktod.generators.base import Generator, GeneratorConfig, LoraSettings, build_generator
from mktod.meta import MetaConfig
from mktod.pipeline import KBSetting, Pipeline, PipelineConfig
from mktod.retriever import Retriever, RetrieverProtocol, build_retriever

COMPLETE = "COMPLETE"
PIPELINE_FILE = "pipeline.yaml"
STATE_FILE = "state.pt"
STEP_FILE = "step.json"
SCORES_FILE = "dev_scores.json"  # best/ only: the dev scores that made it the best
GENERATOR_DIR = "generator"
RETRIEVER_DIR = "retriever"


@dataclass(frozen=True)
class PipelineSpec:
    """Everything besides the weights that a checkpoint's pipeline needs (``pipeline.yaml``)."""

    dataset: str = ""
    k: int = 7
    setting: KBSetting = "condensed"
    meta: MetaConfig = field(default_factory=MetaConfig)
    # generator.model is relative to the checkpoint folder ("generator"); source_model is what training
    # started from (a hub name or a backbone folder), kept for provenance only.
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    source_model: str = ""
    # "" = the folder's retriever/ checkpoint; otherwise any build_retriever spec, e.g.
    # "encoder:all-MiniLM-L6-v2" in an exported pipeline that ships without the 90 MB retriever weights.
    retriever: str = ""


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE).is_file()


def checkpoint_step(directory: Path) -> int | None:
    """The training step a checkpoint's weights are from, or None when it does not say.

    Reads ``step.json``; checkpoints written before it existed fall back to ``best/``'s
    ``dev_scores.json`` or ``last/``'s ``state.pt``.
    """
    step_file = directory / STEP_FILE
    if step_file.is_file():
        return int(json.loads(step_file.read_text(encoding="utf-8"))["step"])
    scores = directory / SCORES_FILE
    if scores.is_file():
        step = json.loads(scores.read_text(encoding="utf-8")).get("step")
        return int(step) if step is not None else None
    state = directory / STATE_FILE
    if state.is_file():
        return int(torch.load(state, map_location="cpu", weights_only=True)["step"])
    return None


def save_checkpoint(
    directory: Path,
    generator: Any,
    retriever: Retriever,
    spec: PipelineSpec,
    config_text: str = "",
    state: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
    step: int | None = None,
) -> Path:
    """Write a checkpoint folder atomically: built beside ``directory``, then swapped in.

    ``generator`` is a trainable generator (``model`` and ``tokenizer``; a causal one with a LoRA
    adapter saves the adapter only). A crash mid-save leaves the previous checkpoint in place.
    """
    tmp = directory.with_name(f".{directory.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save = getattr(generator, "save", None)
    if callable(save):
        save(tmp / GENERATOR_DIR)
    else:
        generator.model.save_pretrained(tmp / GENERATOR_DIR)
        generator.tokenizer.save_pretrained(tmp / GENERATOR_DIR)
    retriever.save(tmp / RETRIEVER_DIR)
    if getattr(generator, "is_adapter", False):
        # The base model is named as configured (e.g. "smollm2"); the folder holds the adapter.
        saved = replace(spec.generator, adapter=GENERATOR_DIR)
    else:
        saved = replace(spec.generator, model=GENERATOR_DIR, adapter="", lora=LoraSettings())
    dump_config(replace(spec, generator=saved), tmp / PIPELINE_FILE)
    if config_text:
        (tmp / "config.yaml").write_text(config_text, encoding="utf-8")
    if step is not None:
        (tmp / STEP_FILE).write_text(json.dumps({"step": step}) + "\n", encoding="utf-8")
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text, encoding="utf-8")
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
    old = directory.with_name(f".{directory.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def _require(directory: Path) -> None:
    if not is_complete(directory):
        what = "an interrupted save" if directory.is_dir() else "no such folder"
        raise ConfigError(
            f"{directory}: not a complete pipeline checkpoint ({what}); expected a folder such as "
            "runs/NAME/best or runs/NAME/last written by `mktod train`"
        )


def load_spec(directory: Path) -> PipelineSpec:
    """The spec of a checkpoint folder, or of a hand-written pipeline file (``*.yaml``): a pipeline
    assembled from parts without training, e.g. an untuned generator over a warm-up retriever."""
    if directory.is_file() and directory.suffix in (".yaml", ".yml"):
        spec = load_config(PipelineSpec, directory)
        if not spec.retriever:
            raise ConfigError(f"{directory}: a pipeline file must name its retriever (retriever: ...)")
        return spec
    _require(directory)
    return load_config(PipelineSpec, directory / PIPELINE_FILE)


def _inside(directory: Path, name: str) -> str:
    """``name`` resolved against the checkpoint folder when it names something there, else as is
    (a hub name or an alias such as ``smollm2``)."""
    if not name or Path(name).is_absolute() or not (directory / name).exists():
        return name
    return str(directory / name)


@dataclass(frozen=True)
class Decoding:
    """Decoding settings to use instead of a checkpoint's own (None: keep the checkpoint's)."""

    num_beams: int | None = None
    no_repeat_ngram_size: int | None = None

    def apply(self, gen: GeneratorConfig) -> GeneratorConfig:
        named = {k: v for k, v in asdict(self).items() if v is not None}
        return replace(gen, **named)


def generator_config(directory: Path, spec: PipelineSpec) -> GeneratorConfig:
    """The spec's generator config with its model and adapter paths resolved against the folder."""
    gen = spec.generator
    return replace(gen, model=_inside(directory, gen.model), adapter=_inside(directory, gen.adapter))


def load_retriever(directory: Path, device: str | torch.device = "cpu") -> Retriever:
    retriever = build_retriever(str(directory / RETRIEVER_DIR), device)
    if not isinstance(retriever, Retriever):  # build_retriever of a folder is always dense; for mypy
        raise ConfigError(f"{directory / RETRIEVER_DIR}: not a dense retriever checkpoint")
    return retriever


def load_state(directory: Path) -> dict[str, Any]:
    _require(directory)
    path = directory / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: holds no training state ({STATE_FILE}); resume from runs/NAME/last")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def load_pipeline(
    directory: Path | str,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    generator: Generator | None = None,
    k: int | None = None,
    decoding: Decoding | None = None,
) -> Pipeline:
    """The pipeline a checkpoint folder (or pipeline file) defines: its retriever, meta config,
    generator, k and setting.

    ``generator`` replaces the folder's own (which is then never loaded), e.g. a chat LLM that reads
    the records this pipeline retrieves. ``k`` replaces the folder's number of records per turn (e.g.
    the large-scale setting's 7 for a pipeline trained with a condensed KB's 6). ``decoding`` replaces
    the folder's decoding settings that it names.
    """
    directory = Path(directory)
    spec = load_spec(directory)
    # Relative paths in a pipeline file are relative to the file's folder (or to the working directory).
    base = directory.parent if directory.is_file() else directory
    if generator is None:
        gen = generator_config(base, spec)
        if decoding is not None:
            gen = decoding.apply(gen)
        generator = build_generator(gen, spec.meta, device)
    retriever: RetrieverProtocol = (
        build_retriever(_inside(base, spec.retriever), device)
        if spec.retriever
        else load_retriever(directory, device)
    )
    return Pipeline(
        retriever,
        generator,
        spec.meta,
        PipelineConfig(k=spec.k if k is None else k, setting=spec.setting, batch_size=batch_size),
    )
