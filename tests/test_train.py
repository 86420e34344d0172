"""Joint training end to end on tiny models and the 3-dialogue CamRest sample (a few steps each)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_helpers import crash_after_step, make_models, paper_k, tiny_config, write_data

import mktod.train as train_module
from mktod.checkpoint import checkpoint_step, is_complete, load_pipeline, load_spec
from mktod.config import load_config
from mktod.datasets import DataPaths, get_loader
from mktod.distributed import SINGLE, Group
from mktod.errors import ConfigError
from mktod.evaluate import PipelineEvaluation
from mktod.metrics import RecallScores, ResponseScores
from mktod.retriever import Retriever
from mktod.train import train
from mktod.train_config import TrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train")
    make_models(path)
    return path


@pytest.fixture(scope="module")
def paths(root: Path) -> DataPaths:
    return write_data(root)


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("setting", ["condensed", "large"])
def test_three_step_run_trains_both_sides_and_writes_checkpoints(
    root: Path, paths: DataPaths, setting: str
) -> None:
    cfg = tiny_config(root, f"run-{setting}", f"data.setting={setting}", "retriever.refresh_every=2")
    initial = _weights(_tiny_retriever(cfg))
    result = train(cfg, paths, command="mktod train --config x")
    assert result.steps == 3 and result.start_step == 0
    assert set(result.losses) == {"loss", "nll", "mml"}
    assert all(math.isfinite(v) for v in result.losses.values())

    out = root / f"run-{setting}"
    log = _log(out)
    assert [e["step"] for e in log] == [1, 2, 3]
    assert all(math.isfinite(e["mml"]) and e["grad_norm"] > 0 for e in log)
    assert [e["step"] for e in log if "dev" in e] == [2, 3]  # eval_every 2, and the last step
    # What MML asked of the retriever, per logged step: 2 micro-batches x 2 turns (those with records).
    assert all(e["grad_norm_retriever"] > 0 for e in log)
    for e in log:
        diag = e["mml_diag"]
        assert 0 < diag["turns"] <= 4 and 0.0 <= diag["total_variation"] <= 1.0
        assert diag["likelihood_spread"] >= 0.0
        if "gold_turns" in diag:
            assert 0 < diag["gold_turns"] <= 4 and 0.0 <= diag["q_gold_mass"] <= 1.0
    for name in ("last", "best"):
        folder = out / name
        assert is_complete(folder)
        assert (folder / "generator" / "config.json").is_file() and (
            folder / "retriever" / "retriever.json"
        ).is_file()
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["_provenance"]["command"] == "mktod train --config x"
        assert len(saved["_provenance"]["data_version"]) == 64
        spec = load_spec(folder)
        assert (spec.k, spec.setting, spec.dataset, spec.generator.model) == (
            2,
            setting,
            "camrest",
            "generator",
        )
    assert (out / "last" / "state.pt").is_file() and (out / "best" / "dev_scores.json").is_file()
    assert (out / "eval" / "step-000002" / "predictions.txt").is_file()
    # MML's gradient reached the retriever: its weights moved.
    assert _changed(initial, _weights(Retriever.load(out / "last" / "retriever").encoder))
    # The saved config reloads as a config.
    assert load_config(TrainConfig, out / "config.yaml").optim.max_steps == 3

    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, paths)


def _tiny_retriever(cfg: TrainConfig) -> torch.nn.Module:
    return train_module.initial_retriever(cfg.retriever, "cpu").encoder


def test_mml_off_and_ctr_on_switch_the_losses(root: Path, paths: DataPaths) -> None:
    cfg = tiny_config(root, "no-mml", "loss.use_mml=false", "optim.max_steps=2", "data.dev_split=null")
    before = _weights(_tiny_retriever(cfg))
    result = train(cfg, paths)
    assert set(result.losses) == {"loss", "nll"} and result.best is None
    assert result.losses["loss"] == pytest.approx(result.losses["nll"])
    assert not _changed(before, _weights(Retriever.load(root / "no-mml" / "last" / "retriever").encoder))

    cfg = tiny_config(
        root, "ctr", "loss.use_ctr=true", "meta.mode=none", "optim.max_steps=1", "data.dev_split=null"
    )
    result = train(cfg, paths)
    assert set(result.losses) == {"loss", "nll", "mml", "ctr"}
    parts = result.losses["nll"] + result.losses["mml"] + result.losses["ctr"]
    assert result.losses["loss"] == pytest.approx(parts, rel=1e-5)


def test_resume_continues_exactly_where_an_interrupted_run_stopped(
    root: Path, paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ("optim.max_steps=4", "data.setting=large", "retriever.refresh_every=3")
    full = train(tiny_config(root, "full", *overrides), paths)

    save = train_module.save_checkpoint

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_step(2, save))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(root, "cut", *overrides), paths)
    monkeypatch.setattr(train_module, "save_checkpoint", save)

    with pytest.raises(ConfigError, match=r"differs .* optim\.lr"):
        train(tiny_config(root, "cut", *overrides, "optim.lr=0.01"), paths, resume=True)
    # A run killed after logging a step it never checkpointed: the resumed run logs that step anew.
    with (root / "cut" / "log.jsonl").open("a") as fh:
        fh.write('{"step": 3, "loss": -1.0}\n')
    resumed = train(tiny_config(root, "cut", *overrides), paths, resume=True)
    assert [e["step"] for e in _log(root / "cut")] == [1, 2, 3, 4]
    assert all(e["loss"] != -1.0 for e in _log(root / "cut"))
    assert resumed.start_step == 2 and resumed.steps == 4
    for key, value in full.losses.items():
        assert resumed.losses[key] == pytest.approx(value, abs=1e-5)
    assert resumed.best_step == full.best_step
    compared = 0
    for part in ("generator", "retriever/context"):
        for file in (root / "full" / "last" / part).glob("*.safetensors"):
            compared += 1
            x, y = load_file(file), load_file(root / "cut" / "last" / part / file.name)
            for name in x:
                torch.testing.assert_close(x[name], y[name], atol=1e-5, rtol=0)
    assert compared == 2


def _fake_evaluation(f1s: list[float]) -> Any:
    calls: list[int] = []

    def fake(
        pipeline: Any, split: Any, vocab: Any, out_dir: Path, *args: Any, **kwargs: Any
    ) -> PipelineEvaluation:
        f1 = f1s[len(calls)]
        calls.append(1)
        scores = ResponseScores(1.0, f1, f1, f1, 3, 3, 1, 1, 1)
        out_dir.mkdir(parents=True, exist_ok=True)
        recall = RecallScores({1: 50.0}, {1: 50.0}, 2, 2)
        return PipelineEvaluation(scores, recall, 3, out_dir / "p.txt", out_dir / "r.jsonl")

    return fake


def test_best_checkpoint_is_the_best_dev_entity_f1(
    root: Path, paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "evaluate_pipeline", _fake_evaluation([10.0, 30.0, 20.0]))
    result = train(tiny_config(root, "best", "optim.eval_every=1"), paths)
    assert (result.best_step, result.best_entity_f1) == (2, 30.0)
    scores = json.loads((root / "best" / "best" / "dev_scores.json").read_text())
    assert scores["step"] == 2 and scores["entity_f1"] == 30.0
    # Each folder says which step its weights are from: best/ the best evaluation's, last/ the last.
    assert checkpoint_step(root / "best" / "best") == 2
    assert checkpoint_step(root / "best" / "last") == 3


def test_checkpoint_step_reads_older_checkpoints_without_step_json(tmp_path: Path) -> None:
    best, last, bare = tmp_path / "best", tmp_path / "last", tmp_path / "bare"
    for folder in (best, last, bare):
        folder.mkdir()
    (best / "dev_scores.json").write_text(json.dumps({"step": 150, "entity_f1": 6.0}))
    torch.save({"step": 400, "best_f1": 6.0, "rng_torch": torch.get_rng_state()}, last / "state.pt")
    assert (checkpoint_step(best), checkpoint_step(last), checkpoint_step(bare)) == (150, 400, None)


def test_load_pipeline_round_trip_generates(root: Path, paths: DataPaths) -> None:
    folder = root / "run-condensed" / "best"
    if not is_complete(folder):
        train(tiny_config(root, "run-condensed"), paths)
    pipeline = load_pipeline(folder)
    assert pipeline.config.k == 2 and pipeline.config.setting == "condensed"
    dialogue = get_loader("camrest").load_split("test", paths).dialogues[0]
    reply = pipeline.respond(dialogue.context(0), dialogue.kb)
    assert isinstance(reply.text, str) and len(reply.records) == 2
    assert not any(r.negative for r in reply.records)  # no easy negative at inference


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="SMD has no dataset-level KB"):
        load_config(TrainConfig, None, ["data.dataset=smd", "data.setting=large"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(TrainConfig, None, ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="no loss left"):
        load_config(TrainConfig, None, ["loss.alpha=0", "loss.use_mml=false"])


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*-*-*.yaml"))


@pytest.mark.parametrize(
    "path",
    [p for p in CONFIGS if not p.name.startswith("retriever") and not p.stem.endswith("-cpu")],
    ids=lambda p: p.stem,
)
def test_shipped_configs_load(path: Path) -> None:
    """The paper's configs ({dataset}-{setting}-{variant}[-smollm2]): its batch, steps, K and lengths."""
    cfg = load_config(TrainConfig, path)
    dataset, setting, variant, *backbone = path.stem.split("-")
    assert (cfg.data.dataset, cfg.data.setting) == (dataset, setting)
    if backbone == ["smollm2"]:
        assert cfg.generator.kind == "causal" and cfg.generator.model == "smollm2"
        assert cfg.generator.lora.r > 0
    else:
        assert cfg.generator.kind == "seq2seq"
    assert cfg.optim.batch_size * cfg.optim.grad_accum == 64 and cfg.optim.max_steps == 1500
    assert cfg.retriever.k == paper_k(dataset, setting)
    assert cfg.generator.max_target_tokens == (128 if dataset == "smd" else 64)
    assert cfg.loss.use_ctr == (variant == "ctr")
    assert cfg.meta.mode == {"prefix": "prefix", "prompt": "prompt", "ctr": "none"}[variant]


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.endswith("-cpu")], ids=lambda p: p.stem)
def test_cpu_configs_load(path: Path) -> None:
    """The short CPU runs ({dataset}-{setting}-{variant}[-backbone]-cpu): the paper's K, few turns."""
    cfg = load_config(TrainConfig, path)
    dataset, setting, variant, *backbone = path.stem.removesuffix("-cpu").split("-")
    assert (cfg.data.dataset, cfg.data.setting, cfg.meta.mode) == (dataset, setting, variant)
    assert cfg.retriever.k == paper_k(dataset, setting) and cfg.loss.use_mml
    turns = cfg.optim.max_steps * cfg.optim.batch_size * cfg.optim.grad_accum
    if backbone == ["smollm2"]:
        assert cfg.generator.kind == "causal" and cfg.generator.lora.r > 0
        assert turns <= 400  # "a few hundred turns" on CPU (issue 7)
    else:
        assert cfg.generator.kind == "seq2seq" and turns <= 4000


def test_smoke_config_loads() -> None:
    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
    assert cfg.optim.max_steps <= 50 and cfg.optim.eval_limit is not None


@pytest.mark.parametrize("dataset", ["camrest", "smd"])
def test_backbone_twins_differ_only_in_the_backbone(dataset: str) -> None:
    """The BERT2BERT and T5-from-scratch CPU runs compare backbones (issue #4 item 7): everything else,
    data, records, meta knowledge, losses, steps and seed, must be the same."""
    root = Path(__file__).resolve().parents[1] / "configs"
    b2b = asdict(load_config(TrainConfig, root / f"{dataset}-condensed-prompt-cpu.yaml"))
    t5 = asdict(load_config(TrainConfig, root / f"{dataset}-condensed-prompt-t5-cpu.yaml"))
    assert (b2b["generator"].pop("model"), t5["generator"].pop("model")) == (
        "runs/backbones/bert2bert-minilm",
        f"runs/backbones/{dataset}-t5-small",
    )
    b2b["optim"].pop("lr"), t5["optim"].pop("lr")  # random weights take a higher learning rate
    assert b2b.pop("output_dir") != t5.pop("output_dir")
    assert b2b == t5


def test_a_deadline_stops_after_the_step_that_would_overrun_then_resume_finishes(
    root: Path, paths: DataPaths
) -> None:
    overrides = ("optim.max_steps=3", "optim.eval_every=100", "optim.save_every=100")
    # A deadline already passed: the first step is taken, then the run stops as it would at max_steps
    # (dev evaluation, best/ and last/ saved, the step logged) although no cadence falls on step 1.
    cut = train(tiny_config(root, "deadline", *overrides), paths, deadline=time.monotonic())
    assert cut.out_of_time and cut.steps == 1
    assert checkpoint_step(root / "deadline" / "last") == 1
    assert cut.best_step == 1 and checkpoint_step(root / "deadline" / "best") == 1
    log = _log(root / "deadline")
    assert [e["step"] for e in log] == [1] and "dev" in log[0]

    resumed = train(tiny_config(root, "deadline", *overrides), paths, resume=True)
    assert not resumed.out_of_time and (resumed.start_step, resumed.steps) == (1, 3)
    assert [e["step"] for e in _log(root / "deadline")] == [1, 2, 3]

    # A deadline far off changes nothing: the run ends at max_steps.
    roomy = train(tiny_config(root, "roomy", *overrides), paths, deadline=time.monotonic() + 3600)
    assert not roomy.out_of_time and roomy.steps == 3


def test_rank_zero_decides_the_deadline_for_every_process() -> None:
    """mktod.deadline.past_deadline is the rule (tests/test_train_retriever.py); the loop asks it
    through the process group, and with no deadline never stops."""
    group = Group(SINGLE, torch.device("cpu"))
    started = time.monotonic() - 1.0
    assert not train_module._out_of_time(group, None, started, 100.0, True)
    assert train_module._out_of_time(group, time.monotonic() + 5.0, started, 3.0, True)
    assert not train_module._out_of_time(group, time.monotonic() + 5.0, started, 3.0, False)
