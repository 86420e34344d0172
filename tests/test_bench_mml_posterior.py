"""bench/quality/mml_posterior.py: where MML pushes the retriever, by hand and on a tiny trained run."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch
from train_helpers import tiny_config, write_data

from mktod.meta import NEGATIVE_TAGS, TaggedRecord
from mktod.train import train
from mktod.types import Record

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mml_posterior", ROOT / "bench" / "quality" / "mml_posterior.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_posterior_stats_by_hand() -> None:
    script = _script()
    # One turn, three records, τ = 1. Scores log(2), 0, pad: q = (2/3, 1/3). The generator finds the
    # response 4x likelier under record 2: posterior ∝ (2/3 · 1, 1/3 · 4) = (1/3, 2/3).
    scores = torch.tensor([[math.log(2.0), 0.0, 5.0]])
    single = torch.tensor([[0.0, math.log(4.0), 0.0]])
    mask = torch.tensor([[True, True, False]])
    gold = torch.tensor([[False, True, True]])  # the padding slot's "gold" must not count
    stats = script.posterior_stats(scores, single, mask, gold, temperature=1.0)
    assert stats["q_gold_mass"] == pytest.approx([1 / 3])
    assert stats["posterior_gold_mass"] == pytest.approx([2 / 3])
    assert stats["q_top_is_gold"] == [0.0] and stats["posterior_top_is_gold"] == [1.0]
    assert stats["gold_share"] == pytest.approx([0.5])


def test_gold_mask_compares_normalised_values() -> None:
    script = _script()
    a = TaggedRecord(Record("a", {"name": "pizza_hut", "area": "centre"}), NEGATIVE_TAGS, 1, 1.0, 1.0)
    b = TaggedRecord(Record("b", {"name": "golden_wok", "area": "north"}), NEGATIVE_TAGS, 2, 0.5, 0.5)
    mask = script.gold_mask([(a, b), (b,)], [{"pizza hut"}, {"nowhere"}])
    assert mask.tolist() == [[True, False], [False, False]]


def test_runs_on_a_trained_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_data(tmp_path)
    train(tiny_config(tmp_path, "run"), paths)
    script = _script()
    argv = ["--checkpoint", str(tmp_path / "run" / "best"), "--dataset", "camrest", "--split", "dev"]
    argv += ["--negative", "--data-dir", str(paths.data_dir), "--cache-dir", str(paths.cache_dir)]
    assert script.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["turns"] > 0 and summary["negative"] is True
    assert summary["temperature"] == pytest.approx(0.1)  # the run's loss.mml_temperature
    for key in ("q_gold_mass", "posterior_gold_mass", "q_top_is_gold", "posterior_top_is_gold", "gold_share"):
        assert 0.0 <= summary[key] <= 100.0
    assert summary["gold_share"] > 0  # the turns were chosen for having a gold entity in their KB


def test_the_temperature_travels_with_a_copied_checkpoint(tmp_path: Path) -> None:
    script = _script()
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("loss:\n  mml_temperature: 0.1\n", encoding="utf-8")
    assert script.run_temperature(run / "best") == pytest.approx(0.1)  # from the run folder
    (run / "best" / "config.yaml").write_text("loss:\n  mml_temperature: 0.05\n", encoding="utf-8")
    copied = tmp_path / "elsewhere" / "snapshot"
    shutil.copytree(run / "best", copied)
    assert script.run_temperature(copied) == pytest.approx(0.05)  # its own copy of the run's config
    (copied / "config.yaml").unlink()
    with pytest.raises(SystemExit, match="pass --temperature"):  # no silent τ = 1
        script.run_temperature(copied)
