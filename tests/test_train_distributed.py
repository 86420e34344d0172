"""Data-parallel `mktod train`: two CPU processes (gloo) under torchrun train what one process trains.

Tiny models and the 3-dialogue CamRest sample as in test_train, with dropout off: with it every process
would draw its own masks and the runs could not be compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from train_helpers import make_models, path_args, tiny_config, write_data

from mktod.checkpoint import is_complete, load_state
from mktod.cli import main
from mktod.config import dump_config
from mktod.datasets import DataPaths
from mktod.distributed import Launch
from mktod.errors import ConfigError
from mktod.generators.base import Likelihoods
from mktod.train import TrainResult, train
from mktod.train_config import LossConfig
from mktod.train_loss import TurnCounts, joint_loss

torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo unavailable"
)

# k = 3 is every KB of the sample, so each easy negative comes from a donor KB, drawn by the turn's place
# in the micro-batch. Batches of 4 of the 9 training turns: 4, 4, 1, so shares of 2 + 2, then 1 + 0 (a
# process with no turn of a micro-batch).
CONDENSED = ("retriever.k=3", "optim.batch_size=4", "optim.max_steps=4")
# Large-scale (an index on every process, refreshed; dev evaluation re-indexes) with shares of 2 + 1.
LARGE = ("data.setting=large", "retriever.refresh_every=3", "optim.batch_size=3", "optim.max_steps=4")
# Adam moves every weight by up to lr per step however small its gradient, so float noise in a near-zero
# gradient entry (the shares are padded differently from the whole batch) shows in the weights: mostly
# under 3e-5, but a gradient that is itself noise-sized (a sum with heavy cancellation, e.g. BERT's
# token-type row) can flip sign and move by a few lr-sized steps. So nearly every weight must agree
# within ATOL (4% of the 2.5e-3 this schedule can move a weight) and every weight within ATOL_NOISE.
# Gradients not summed across processes, or summed wrongly, are off by whole steps almost everywhere.
ATOL = 1e-4
ATOL_NOISE = 1e-3
NOISY_SHARE = 1e-3
# The logged values of step 1 come from the same weights in both runs, so they agree to float precision
# (the grad_norm there is the norm of the all-reduced gradient: a wrong sum shows). From step 2 on they
# come from weights that differ by those flips, and which entries flip, and whether a flipped one
# matters, depends on the model and the CPU's kernels: here the two runs agree to 1e-6, but one CI run
# logged a step-2 grad_norm of 50.09075 against 50.09135 (1.2e-5), back when the tiny T5's tokenizer
# took other ids in every process (see _canonical_unigram_pieces). Later steps agree within REL_LATER.
REL_FIRST = 1e-5
REL_LATER = 1e-4

# Stops the run once last/ holds step 2 (rank 0 saves, then raises); torchrun then ends the other process.
CRASH_SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
import mktod.train as train_module
from mktod.cli import main
from train_helpers import crash_after_step
train_module.save_checkpoint = crash_after_step(2, train_module.save_checkpoint)
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train-distributed")
    make_models(path)
    for name, keys in (
        ("tiny-t5", ("dropout_rate",)),
        ("tiny-bert", ("hidden_dropout_prob", "attention_probs_dropout_prob")),
    ):
        config_path = path / name / "config.json"
        config = json.loads(config_path.read_text())
        config.update(dict.fromkeys(keys, 0.0))
        config_path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def paths(root: Path) -> DataPaths:
    """The sample with its training dialogues' KBs made distinct (it repeats one KB), so that a donor
    drawn differently than in one process changes the negative record and the losses."""
    paths = write_data(root)
    train = paths.data_dir / "camrest" / "eer_txt" / "train.txt"
    swaps = [
        {},
        {"cheap": "moderate", "moderate": "cheap"},
        {"centre": "north", "north": "east", "east": "centre"},
    ]
    blocks = train.read_text().split("\n\n")
    for d, swap in enumerate(swaps):
        lines = blocks[d].split("\n")
        kb = [
            "\t".join(swap.get(f, f) for f in line.split("\t")) if line.startswith("0 ") else line
            for line in lines
        ]
        blocks[d] = "\n".join(kb)
    train.write_text("\n\n".join(blocks))
    return paths


def _torchrun(
    root: Path, paths: DataPaths, out: str, overrides: tuple[str, ...], *args: str, script: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`mktod train` (or ``script``) in two processes under torchrun, on the config ``out``.yaml."""
    config = root / f"{out}.yaml"
    if not config.exists():
        dump_config(tiny_config(root, out, *overrides), config)
    target = [str(script)] if script else ["-m", "mktod.cli"]
    where = path_args(paths)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*command, *target, "train", "--config", str(config), *where, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _timeless(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "elapsed_s"}


def _weight_pairs(a: Path, b: Path) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Each saved tensor of checkpoint ``a`` beside its twin in ``b``, named by part and tensor; both
    trained parts (generator, context encoder) must be there, with the same tensors."""
    compared = 0
    for part in ("generator", "retriever/context"):
        for file in (a / part).glob("*.safetensors"):
            compared += 1
            x, y = load_file(file), load_file(b / part / file.name)
            assert x.keys() == y.keys(), f"{part}/{file.name}"
            for name in x:
                yield f"{part} {name}", x[name], y[name]
    assert compared == 2


def _assert_same_weights(a: Path, b: Path) -> None:
    elements, noisy = 0, 0
    for name, x, y in _weight_pairs(a, b):
        torch.testing.assert_close(x, y, atol=ATOL_NOISE, rtol=0, msg=name)
        elements += x.numel()
        noisy += int(((x - y).abs() > ATOL).sum())
    assert noisy <= NOISY_SHARE * elements, f"{noisy} of {elements} weights differ by more than {ATOL}"


def _assert_same_losses(one: list[dict[str, Any]], two: list[dict[str, Any]]) -> None:
    assert [e["step"] for e in one] == [e["step"] for e in two]
    for x, y in zip(one, two, strict=True):
        for key in ("lr", "lr_retriever"):  # the schedule alone sets them
            assert y[key] == pytest.approx(x[key], rel=1e-12), (x["step"], key)
        rel = REL_FIRST if x["step"] == 1 else REL_LATER
        for key in ("loss", "nll", "mml", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=rel), (x["step"], key)


Runs = tuple[TrainResult, subprocess.CompletedProcess[str]]


def _one_and_two(root: Path, paths: DataPaths, one: str, two: str, overrides: tuple[str, ...]) -> Runs:
    """An uninterrupted run of ``overrides`` in one process (here, into ``one``) and one in two
    (torchrun, into ``two``)."""
    single = train(tiny_config(root, one, *overrides), paths)
    double = _torchrun(root, paths, two, overrides)
    assert double.returncode == 0, double.stderr[-4000:]
    return single, double


@pytest.fixture(scope="module")
def condensed(root: Path, paths: DataPaths) -> Runs:
    return _one_and_two(root, paths, "one", "two", CONDENSED)


@needs_gloo
def test_two_processes_train_the_weights_and_losses_of_one(root: Path, condensed: Runs) -> None:
    one, two = condensed
    summary = json.loads(two.stdout)
    assert (summary["steps"], summary["best_step"]) == (one.steps, one.best_step)
    for key, value in one.losses.items():
        assert summary["losses"][key] == pytest.approx(value, rel=1e-5)
    _assert_same_losses(_log(root / "one"), _log(root / "two"))
    _assert_same_weights(root / "one" / "last", root / "two" / "last")
    _assert_same_weights(root / "one" / "best", root / "two" / "best")
    saved = (root / "two" / "config.yaml").read_text()
    assert "processes: 2" in saved and "processes: 1" in (root / "one" / "config.yaml").read_text()


@needs_gloo
def test_only_rank_zero_writes(root: Path, condensed: Runs) -> None:
    _, two = condensed
    json.loads(two.stdout)  # one summary, not one per process
    out = root / "two"
    assert [e["step"] for e in _log(out)] == [1, 2, 3, 4]  # one line per step, not two
    assert [e["step"] for e in _log(out) if "dev" in e] == [2, 4]
    assert sorted(p.name for p in out.iterdir()) == ["best", "config.yaml", "eval", "last", "log.jsonl"]
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-000002", "step-000004"]
    assert is_complete(out / "last") and is_complete(out / "best")
    assert two.stderr.count("dev entity F1") == 2  # rank 0's evaluations only


def test_more_processes_than_turns_per_micro_batch_are_refused(
    root: Path, paths: DataPaths, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(root, "refused", "optim.batch_size=2")
    with pytest.raises(ConfigError, match=r"3 processes but optim\.batch_size is 2: .* at most 2 processes"):
        train(cfg, paths, launch=Launch(world_size=3, rank=0, local_rank=0))
    # The CLI reads the launch from torchrun's environment.
    config = root / "refused.yaml"
    dump_config(cfg, config)
    for name, value in (("WORLD_SIZE", "3"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    where = path_args(paths)
    assert main(["train", "--config", str(config), *where]) == 2
    assert "3 processes but optim.batch_size is 2" in capsys.readouterr().err
    assert not (root / "refused").exists()


@pytest.fixture(scope="module")
def large(root: Path, paths: DataPaths) -> Runs:
    return _one_and_two(root, paths, "large-one", "large-two", LARGE)


@needs_gloo
def test_two_processes_train_the_large_setting_as_one(root: Path, large: Runs) -> None:
    one, two = large
    summary = json.loads(two.stdout)
    assert (summary["steps"], summary["best_step"]) == (one.steps, one.best_step)
    _assert_same_losses(_log(root / "large-one"), _log(root / "large-two"))
    _assert_same_weights(root / "large-one" / "last", root / "large-two" / "last")


@needs_gloo
def test_resume_under_two_processes_matches_an_uninterrupted_run(
    root: Path, paths: DataPaths, large: Runs
) -> None:
    """Against the uninterrupted two-process run, not the one-process one: the same shares summed in the
    same order, so a resume that restores everything (weights, optimizer, schedule, data order, RNG)
    reproduces it bit for bit, on any machine."""
    script = root / "crash.py"
    script.write_text(CRASH_SCRIPT.format(tests=str(TESTS)))
    cut = _torchrun(root, paths, "large-cut", LARGE, script=script)
    assert cut.returncode != 0 and "mktod: interrupted" in cut.stderr
    out = root / "large-cut"
    assert load_state(out / "last")["step"] == 2 and [e["step"] for e in _log(out)] == [1, 2]

    resumed = _torchrun(root, paths, "large-cut", LARGE, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    summary = json.loads(resumed.stdout)
    full = json.loads(large[1].stdout)
    assert (summary["start_step"], summary["steps"], summary["best_step"]) == (2, 4, full["best_step"])
    assert summary["losses"] == full["losses"]
    assert resumed.stderr.count("resumed from") == 1
    resumed_log, full_log = ([_timeless(e) for e in _log(d)] for d in (out, root / "large-two"))
    assert resumed_log == full_log  # every logged value, dev scores and MML diagnostics included
    for name, x, y in _weight_pairs(root / "large-two" / "last", out / "last"):
        assert torch.equal(x, y), name


# ------------------------------------------------------------------------------------- pure pieces


def test_the_shares_losses_sum_to_the_whole_batch_loss() -> None:
    """With the whole batch's counts, each share's terms are its part of the whole batch's means."""
    torch.manual_seed(0)
    cfg = LossConfig(use_ctr=True, mml_temperature=0.1)
    mask = torch.tensor(
        [[True, True, False], [False, False, False], [True, True, True], [True, False, False]]
    )
    lik = Likelihoods(
        joint=-torch.rand(4) * 10,
        single=-torch.rand(4, 3) * 10,
        lengths=torch.tensor([3, 4, 5, 6]),
        mask=mask,
        no_entity=-torch.rand(4) * 10,
    )
    scores = torch.randn(4, 3)
    whole = joint_loss(cfg, lik.joint, lik, scores)
    counts = TurnCounts(turns=4, with_records=3)  # turn 1 has no record
    shares = []
    for rank in range(2):
        rows = torch.arange(rank, 4, 2)
        part = Likelihoods(
            lik.joint[rows], lik.single[rows], lik.lengths[rows], mask[rows], lik.no_entity[rows]
        )
        shares.append(joint_loss(cfg, part.joint, part, scores[rows], counts))
    for name in ("total", "nll", "mml", "ctr"):
        parts = sum(float(getattr(s, name)) for s in shares)
        assert parts == pytest.approx(float(getattr(whole, name)), rel=1e-6), name


def test_launch_from_the_environment() -> None:
    assert Launch.from_env({}) == Launch()
    launch = Launch.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (launch.world_size, launch.rank, launch.local_rank) == (4, 3, 1)
    assert launch.device("cuda") == "cuda:1" and launch.device("cpu") == "cpu"
    assert Launch().device("cuda:1") == "cuda:1"  # one process: the device as given
    with pytest.raises(ConfigError, match="pass --device cuda"):
        launch.device("cuda:0")
    with pytest.raises(ConfigError, match="rank 4 of 4"):
        Launch.from_env({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(ConfigError, match="integers"):
        Launch.from_env({"WORLD_SIZE": "two"})
