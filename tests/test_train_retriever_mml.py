"""The retriever's MML stage against a frozen generator, on tiny models and the CamRest sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from train_helpers import make_models, write_data

from mktod.config import load_config
from mktod.datasets import DataPaths, get_loader
from mktod.encoder import DenseEncoder, EncoderConfig
from mktod.errors import ConfigError
from mktod.generators.base import GeneratorInput
from mktod.meta import MetaConfig
from mktod.retriever import Retriever
from mktod.retriever_config import MMLStageConfig, RetrieverTrainConfig
from mktod.retriever_mml import FrozenLikelihoods, frozen_generator_mml, load_frozen_generator
from mktod.train_data import build_examples, retrieve_records
from mktod.train_retriever import latest_checkpoint, train_retriever

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("retriever-mml")
    make_models(path)
    return path


@pytest.fixture(scope="module")
def paths(root: Path) -> DataPaths:
    return write_data(root)


def _pipeline_file(root: Path, kind: str = "seq2seq") -> Path:
    """A pipeline file naming the tiny T5 (untrained: any fixed generator will do) as the scorer."""
    _, t5 = make_models(root)
    path = root / f"pipeline-{kind}.yaml"
    spec: dict[str, Any] = {
        "dataset": "camrest",
        "k": 2,
        "setting": "condensed",
        "meta": {"mode": "prefix", "temperature": 0.1},
        "generator": {
            "kind": kind,
            "model": str(t5),
            "max_context_tokens": 48,
            "max_record_tokens": 24,
            "max_target_tokens": 8,
        },
        "retriever": "frequency",
    }
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _config(root: Path, out: str, *overrides: str) -> RetrieverTrainConfig:
    bert, _ = make_models(root)
    base = [
        f"output_dir={root / out}",
        "data.dataset=camrest",
        "data.setting=large",
        f"encoder.model={bert}",
        "encoder.max_context_length=64",
        "encoder.max_record_length=32",
        "warmup.batch_size=3",
        "warmup.max_steps=1",
        "warmup.warmup_ratio=0.0",
        "warmup.lr=0.001",
        "stages=[warmup,mml]",
        f"mml.generator={_pipeline_file(root)}",
        "mml.batch_size=4",
        "mml.max_steps=3",
        "mml.save_every=1",
        "mml.keep_checkpoints=3",
        "mml.log_every=1",
        "mml.warmup_ratio=0.0",
        "mml.lr=0.001",
        "mml.refresh_every=2",
        "mml.score_batch_size=3",
    ]
    return load_config(RetrieverTrainConfig, None, [*base, *overrides])


def _examples(paths: DataPaths) -> list[Any]:
    return build_examples(get_loader("camrest").load_split("train", paths), None)


def _weights(retriever: Retriever) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in retriever.encoder.state_dict().items()}


def test_memoised_likelihoods_are_the_generators_single_record_likelihoods(
    root: Path, paths: DataPaths
) -> None:
    generator, _ = load_frozen_generator(str(_pipeline_file(root)), "cpu")
    assert not any(p.requires_grad for p in generator.model.parameters())
    bert, _ = make_models(root)
    retriever = Retriever(DenseEncoder.from_pretrained(EncoderConfig(model=str(bert)), "cpu"))
    examples = _examples(paths)[:4]
    meta = MetaConfig(mode="prefix", temperature=0.1, use_negative=False)
    records = retrieve_records(retriever, examples, 2, meta)
    scorer = FrozenLikelihoods(generator, meta.render, batch_size=3)
    got = scorer(range(4), examples, records)

    inputs = [GeneratorInput(ex.context, recs) for ex, recs in zip(examples, records, strict=True)]
    with torch.no_grad():
        lik = generator.joint_and_single_logprobs(inputs, [ex.response for ex in examples])
    torch.testing.assert_close(got[lik.mask], lik.single[lik.mask].float(), atol=1e-4, rtol=1e-4)
    assert scorer.computed == int(lik.mask.sum()) and scorer.reused == 0

    again = scorer(range(4), examples, records)  # memoised: the generator is not asked again
    assert torch.equal(again, got)
    assert scorer.computed == int(lik.mask.sum()) and scorer.reused == scorer.computed


def test_a_few_steps_on_one_batch_lower_its_mml_loss(root: Path, paths: DataPaths) -> None:
    bert, _ = make_models(root)
    torch.manual_seed(0)
    encoder = DenseEncoder.from_pretrained(EncoderConfig(model=str(bert)), "cpu")
    examples = _examples(paths)
    cfg = MMLStageConfig(generator=str(_pipeline_file(root)), k=3, temperature=0.1)
    loss_fn = frozen_generator_mml(cfg, Retriever(encoder), examples, None, "cpu")
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.5)
    batch = list(range(len(examples)))
    encoder.eval()  # no dropout: the same batch must give the same loss for the same weights
    losses = []
    for step in range(6):
        loss, stats = loss_fn(batch, step)
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert losses[-1] < losses[0] - 1e-3, losses
    assert stats["likelihoods_computed"] > 0 and stats["likelihoods_reused"] > 0


def test_warmup_then_mml_trains_saves_and_resumes_exactly(root: Path, paths: DataPaths) -> None:
    full = train_retriever(_config(root, "full"), paths, command="mktod train-retriever --config x")
    out = root / "full"
    assert full.steps == 3 and full.dev is not None
    log = [json.loads(line) for line in (out / "mml" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 3] and log[-1]["final"]
    assert all(e["likelihoods_computed"] > 0 for e in log[:3])
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log[:3])
    warm = Retriever.load(out / "final")  # the stage moved the warm-up's weights
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["stages"] == ["warmup", "mml"] and saved["mml"]["generator"].endswith(".yaml")

    only_warmup = train_retriever(_config(root, "warm-only", "stages=[warmup]"), paths)
    a, b = _weights(warm), _weights(Retriever.load(only_warmup.output))
    assert any(not torch.equal(a[k], b[k]) for k in a)

    # Interrupted after the MML stage's first step, then resumed: the same weights as the full run.
    cut = root / "cut"
    train_retriever(_config(root, "cut"), paths)
    for name in ("step-000002", "step-000003"):
        shutil.rmtree(cut / "mml" / name)
    shutil.rmtree(cut / "final")
    assert latest_checkpoint(cut / "mml") == cut / "mml" / "step-000001"
    resumed = train_retriever(_config(root, "cut"), paths, resume=True)
    assert resumed.start_step == 1 and resumed.steps == 3
    assert resumed.last_loss == pytest.approx(full.last_loss, abs=1e-6)
    c = _weights(Retriever.load(cut / "final"))
    for key in a:
        torch.testing.assert_close(a[key], c[key], atol=1e-6, rtol=0)


def test_mml_alone_starts_from_a_warmed_up_retriever(root: Path, paths: DataPaths) -> None:
    warm = train_retriever(_config(root, "init-warm", "stages=[warmup]"), paths)
    start = _weights(Retriever.load(warm.output))
    cfg = _config(root, "init-mml", "stages=[mml]", f"init={root / 'init-warm'}", "mml.max_steps=1")
    result = train_retriever(cfg, paths)
    assert result.steps == 1 and not (root / "init-mml" / "warmup").exists()
    after = _weights(Retriever.load(result.output))
    assert start.keys() == after.keys() and any(not torch.equal(start[k], after[k]) for k in start)


def test_mml_stage_config_errors(root: Path, paths: DataPaths) -> None:
    with pytest.raises(ConfigError, match=r"mml\.generator"):
        load_config(RetrieverTrainConfig, None, ["stages=[warmup,mml]"])
    with pytest.raises(ConfigError, match="distinct"):
        load_config(RetrieverTrainConfig, None, ["stages=[warmup,warmup]"])
    with pytest.raises(ConfigError, match="temperature"):
        load_config(RetrieverTrainConfig, None, ["mml.temperature=0"])
    with pytest.raises(ConfigError, match="not a dense retriever"):
        train_retriever(_config(root, "bad-init", "stages=[mml]", "init=bm25"), paths)
    with pytest.raises(ConfigError, match="not a complete pipeline checkpoint"):
        train_retriever(_config(root, "bad-gen", f"mml.generator={root / 'missing'}"), paths)


def test_mml_stage_refuses_a_generator_without_likelihoods(root: Path) -> None:
    path = _pipeline_file(root, kind="openai")
    with pytest.raises(ConfigError, match="gives no likelihoods"):
        load_frozen_generator(str(path), "cpu")
