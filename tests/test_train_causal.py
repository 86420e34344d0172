"""Joint training with the decoder-only generator (issue #7): a tiny Llama with a LoRA adapter, the
3-dialogue CamRest sample, a few steps; the checkpoint holds the adapter only and resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from causal_helpers import save_tiny_llama
from safetensors.torch import load_file
from train_helpers import crash_after_step, paper_k, tiny_config, write_data

import mktod.train as train_module
from mktod.checkpoint import is_complete, load_pipeline, load_spec
from mktod.datasets import DataPaths, get_loader
from mktod.generators.causal import CausalGenerator
from mktod.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train-causal")
    save_tiny_llama(path / "tiny-llama")
    return path


@pytest.fixture(scope="module")
def paths(root: Path) -> DataPaths:
    return write_data(root)


def causal(root: Path, out: str, *overrides: str) -> Any:
    return tiny_config(
        root,
        out,
        "generator.kind=causal",
        f"generator.model={root / 'tiny-llama'}",
        "generator.lora.r=2",
        "generator.lora.alpha=4",
        "generator.lora.dropout=0.0",
        "optim.lr=0.01",
        *overrides,
    )


def test_lora_run_saves_an_adapter_checkpoint_that_serves(root: Path, paths: DataPaths) -> None:
    result = train(causal(root, "lora"), paths)
    assert result.steps == 3 and set(result.losses) == {"loss", "nll", "mml"}
    best = root / "lora" / "best"
    assert is_complete(best)
    files = {p.name for p in (best / "generator").iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    spec = load_spec(best)
    assert spec.generator.kind == "causal" and spec.generator.adapter == "generator"
    assert spec.generator.model == str(root / "tiny-llama")  # the base, named as configured
    saved = yaml.safe_load((best / "pipeline.yaml").read_text())
    assert saved["generator"]["lora"]["r"] == 2

    pipeline = load_pipeline(best)
    assert isinstance(pipeline.generator, CausalGenerator) and pipeline.generator.is_adapter
    split = get_loader("camrest").load_split("dev", paths)
    dialogue = split.dialogues[0]
    reply = pipeline.respond(dialogue.context(1), dialogue.kb)
    assert isinstance(reply.text, str) and reply.records


def test_export_ships_the_trained_retriever_as_a_delta(root: Path, paths: DataPaths) -> None:
    """`mktod export-pipeline --retriever-bits 8`: the trained retriever travels as a delta over its base
    encoder, and the exported pipeline retrieves as the checkpoint does."""
    from mktod.cli import main
    from mktod.errors import ConfigError
    from mktod.export import export_pipeline, folder_size

    best = root / "export-src" / "best"
    if not is_complete(best):
        train(causal(root, "export-src", "optim.max_steps=1"), paths)
    out = root / "exported"
    args = ["export-pipeline", "--checkpoint", str(best), "--out", str(out), "--retriever-bits", "8"]
    assert main(args) == 0
    shipped = out / "retriever"
    assert (shipped / "delta.safetensors").is_file() and not (shipped / "context").exists()
    assert folder_size(out / "retriever") < folder_size(best / "retriever") / 2
    assert load_spec(out).retriever == ""  # the folder's own retriever/, not another spec
    assert "8-bit delta over its base encoder" in (out / "README.md").read_text()

    dialogue = get_loader("camrest").load_split("dev", paths).dialogues[0]
    original, exported = load_pipeline(best), load_pipeline(out)
    for turn in range(1, 3):
        want = original.respond(dialogue.context(turn), dialogue.kb).records
        got = exported.respond(dialogue.context(turn), dialogue.kb).records
        assert [r.record for r in got] == [r.record for r in want]
    with pytest.raises(ConfigError, match="not both"):
        export_pipeline(best, root / "both", retriever="frequency", retriever_bits=4)


def test_full_fine_tuning_saves_the_whole_model(root: Path, paths: DataPaths) -> None:
    train(causal(root, "full-ft", "generator.lora.r=0", "optim.max_steps=1", "data.dev_split=null"), paths)
    last = root / "full-ft" / "last"
    assert (last / "generator" / "model.safetensors").is_file()
    spec = load_spec(last)
    assert spec.generator.model == "generator" and spec.generator.adapter == ""
    assert isinstance(load_pipeline(last).generator, CausalGenerator)


def test_a_restating_run_serves_with_the_restated_message(root: Path, paths: DataPaths) -> None:
    """generator.restate_user is saved beside the checkpoint, so serving builds the prompts training saw."""
    train(
        causal(root, "restate", "generator.restate_user=true", "optim.max_steps=1", "data.dev_split=null"),
        paths,
    )
    last = root / "restate" / "last"
    assert load_spec(last).generator.restate_user
    generator = load_pipeline(last).generator
    assert isinstance(generator, CausalGenerator) and generator.cfg.restate_user
    dialogue = get_loader("camrest").load_split("dev", paths).dialogues[0]
    context = dialogue.context(1)
    turn = generator.inputs.turn(context, (), "")
    restated = generator.tokenizer.decode(
        turn.tail[len(generator.inputs.restated) : -len(generator.inputs.tail)]
    )
    assert restated == generator.tokenizer.decode(generator.inputs.encode(context[-1].text))


def test_lora_run_resumes_exactly(root: Path, paths: DataPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ("optim.max_steps=4", "data.dev_split=null")
    full = train(causal(root, "r-full", *overrides), paths)
    save = train_module.save_checkpoint

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_step(2, save))
    with pytest.raises(KeyboardInterrupt):
        train(causal(root, "r-cut", *overrides), paths)
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    resumed = train(causal(root, "r-cut", *overrides), paths, resume=True)
    assert resumed.start_step == 2 and resumed.steps == 4
    for key, value in full.losses.items():
        assert resumed.losses[key] == pytest.approx(value, abs=1e-5)
    x = load_file(root / "r-full" / "last" / "generator" / "adapter_model.safetensors")
    y = load_file(root / "r-cut" / "last" / "generator" / "adapter_model.safetensors")
    assert x.keys() == y.keys()
    for name in x:
        torch.testing.assert_close(x[name], y[name], atol=1e-5, rtol=0)


def test_a_pipeline_file_assembles_an_untrained_pipeline(root: Path, paths: DataPaths) -> None:
    """configs/pipelines/*.yaml: parts without training (e.g. the zero-shot SmolLM2 rows)."""
    from mktod.errors import ConfigError

    spec = root / "zero-shot.yaml"
    spec.write_text(
        "dataset: camrest\nk: 2\nretriever: frequency\nmeta:\n  mode: prompt\n"
        f"generator:\n  kind: causal\n  model: {root / 'tiny-llama'}\n  max_target_tokens: 4\n"
    )
    pipeline = load_pipeline(spec)
    assert isinstance(pipeline.generator, CausalGenerator) and not pipeline.generator.is_adapter
    dialogue = get_loader("camrest").load_split("dev", paths).dialogues[0]
    reply = pipeline.respond(dialogue.context(1), dialogue.kb)
    assert len(reply.records) == 2
    spec.write_text("dataset: camrest\ngenerator:\n  kind: causal\n")
    with pytest.raises(ConfigError, match="must name its retriever"):
        load_pipeline(spec)


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "configs" / "pipelines").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_shipped_pipeline_files_load(path: Path) -> None:
    from mktod.checkpoint import load_spec

    spec = load_spec(path)
    assert path.stem.startswith(f"{spec.dataset}-") and spec.retriever
    assert spec.k == paper_k(spec.dataset, spec.setting) and (spec.setting == "large") == (
        "-large-" in path.stem
    )
    assert spec.meta.mode in path.stem and spec.generator.kind == "causal"
    adapter = spec.generator.adapter
    assert not adapter or (path.parent / adapter).is_dir()  # relative to the pipeline file's folder
