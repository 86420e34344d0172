"""bench/quality/quality_rows.py: the commands quality.md prints under each row reproduce it.

A row's training command is text, so nothing else would notice a renamed config key, a config that
was moved, or an ``--set output_dir`` that no longer matches the folder the row evaluates."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import load_bench_script

from mktod.config import load_config
from mktod.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


Q = load_bench_script("quality/quality_rows.py")
TRAINED = [row for row in Q.ROWS if "mktod train " in row.training]


def _train_command(training: str) -> list[str]:
    """The `mktod train` part of a row's training text, without the trailing "(CPU, ...)" note."""
    command = next(part for part in training.split(";") if "mktod train " in part)
    command = re.sub(r"\s*\([^()]*\)\s*$", "", command.strip())
    words = shlex.split(command)
    return words[words.index("train") + 1 :]


def _config_and_sets(args: list[str]) -> tuple[Path, list[str]]:
    config, sets = None, []
    for flag, value in itertools.pairwise(args):
        if flag == "--config":
            config = ROOT / value
        elif flag == "--set":
            sets.append(value)
    assert config is not None, f"no --config in {args}"
    return config, sets


@pytest.mark.parametrize("row", TRAINED, ids=[f"{r.dataset}/{r.name}" for r in TRAINED])
def test_a_rows_training_command_loads_and_writes_where_the_row_reads(row: Any) -> None:
    config, sets = _config_and_sets(_train_command(row.training))
    assert config.is_file(), f"{row.name}: {config} is not in the repository"
    cfg = load_config(TrainConfig, config, sets)  # an unknown key or bad value raises here
    assert cfg.data.dataset == row.dataset
    if row.train_run:  # "": a pipeline file over a shipped adapter, or a run another row plots
        assert str(cfg.output_dir) == row.train_run
        assert row.checkpoint.startswith(f"{row.train_run}/")
    if row.checkpoint.endswith(("/best", "/last")):  # also the -all and -last rows, which plot nothing
        assert row.checkpoint.rsplit("/", 1)[0] == str(cfg.output_dir)


def test_a_last_step_row_reads_the_same_run_and_refuses_anything_but_a_best_checkpoint() -> None:
    row = next(r for r in Q.ROWS if r.checkpoint.endswith("/best") and r.train_run)
    last = Q.at_last_step(row, 56)
    assert (last.name, last.checkpoint, last.train_run) == (
        f"{row.name}-last",
        f"{row.train_run}/last",
        "",
    )
    assert last.label.endswith("its last (step-56) checkpoint") and last.training == row.training
    with pytest.raises(ValueError, match=row.name):
        Q.at_last_step(last, 56)


def test_the_parser_reads_overrides_and_drops_the_where_note() -> None:
    args = _train_command(
        "mktod build-backbone --out x; mktod train --config c.yaml --set meta.mode=none "
        "--set output_dir=runs/y (CPU, 30 steps x 4 turns)"
    )
    assert args == ["--config", "c.yaml", "--set", "meta.mode=none", "--set", "output_dir=runs/y"]


def test_every_row_is_well_formed_and_named_once_per_dataset() -> None:
    # A Row( left open before another parses as Row(Row(...), "next name", ...): the next row vanishes
    # from the table without an error, so the field types are checked here.
    for row in Q.ROWS:
        for name in ("name", "label", "checkpoint", "dataset", "training", "train_run", "split", "backbone"):
            assert isinstance(getattr(row, name), str), f"{row!r}: {name} is not text"
        assert row.limit is None or isinstance(row.limit, int)
        assert isinstance(row.options, tuple) and all(isinstance(o, str) for o in row.options)
    keys = [(row.dataset, row.name) for row in Q.ROWS]
    assert len(keys) == len(set(keys)), "two rows share a dataset and name"
    assert all(dataset in Q.DATASET_NAMES for dataset, _ in keys)


def test_every_stated_comparison_names_rows_that_exist() -> None:
    names = {row.name for row in Q.ROWS}
    pairs = Q.stated_pairs()
    missing = sorted({name for pair in pairs for name in pair} - names)
    assert not missing, f"comparisons name rows that are not in ROWS: {missing}"
    for first, second in pairs:  # a comparison is within one dataset: both rows there at least once
        assert {r.dataset for r in Q.ROWS if r.name == first} & {
            r.dataset for r in Q.ROWS if r.name == second
        }


RERUNS = [row for row in Q.ROWS if row.rerun_of]


@pytest.mark.parametrize("row", RERUNS, ids=[f"{r.dataset}/{r.name}" for r in RERUNS])
def test_a_retrained_row_runs_its_first_runs_command_into_another_folder(row: Any) -> None:
    first = next(r for r in Q.ROWS if (r.dataset, r.name) == (row.dataset, row.rerun_of))
    config, sets = _config_and_sets(_train_command(row.training))
    first_config, first_sets = _config_and_sets(_train_command(first.training))
    assert config == first_config
    assert [s for s in sets if not s.startswith("output_dir=")] == first_sets
    assert row.train_run != first.train_run


def test_each_comparison_of_a_retrained_run_is_stated_again_with_its_twin() -> None:
    by_name = {(p.first, p.second): p for p in Q.pairings()}
    assert RERUNS, "no retrained rows to check"
    for row in RERUNS:
        assert (row.rerun_of, row.name) in by_name  # how far the two runs land apart
        for p in Q.PAIRINGS:
            if p.first == row.rerun_of:
                again = by_name[(row.name, p.second)]
                assert again.topic == p.topic and again.detail.endswith(": the retrained run")
            if p.second == row.rerun_of:
                assert (p.first, row.name) in by_name
