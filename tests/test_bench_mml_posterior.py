"""bench/quality/mml_posterior.py: where MML pushes the retriever, by hand and on a tiny trained run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from bench_helpers import load_bench_script
from train_helpers import path_args, tiny_config, write_data

from mktod.train import train

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    return load_bench_script("quality/mml_posterior.py")


def test_runs_on_a_trained_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_data(tmp_path)
    train(tiny_config(tmp_path, "run"), paths)
    script = _script()
    argv = ["--checkpoint", str(tmp_path / "run" / "best"), "--dataset", "camrest", "--split", "dev"]
    argv += ["--negative", *path_args(paths)]
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
