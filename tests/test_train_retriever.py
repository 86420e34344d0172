from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from retriever_helpers import save_tiny_model, write_camrest_sample

from mktod.cli import main
from mktod.config import dump_config, load_config
from mktod.datasets import DataPaths
from mktod.deadline import past_deadline
from mktod.errors import ConfigError
from mktod.retriever import Retriever, build_retriever
from mktod.retriever_config import RetrieverTrainConfig
from mktod.train_retriever import (
    latest_checkpoint,
    map_record,
    pseudo_positive,
    train_retriever,
    warmup_examples,
)
from mktod.types import KB, Dialogue, Record, Split, Turn

ROWS = (
    Record("r0", {"name": "golden_wok", "area": "north", "food": "chinese"}, "restaurant"),
    Record(
        "r1",
        {"name": "the_missing_sock", "area": "east", "food": "international", "choice": "2"},
        "restaurant",
    ),
    Record("r2", {"name": "pizza_hut", "area": "north", "food": "italian"}, "restaurant"),
)


def test_pseudo_positive_counts_values_and_breaks_ties_by_kb_order() -> None:
    kb = KB(ROWS)
    assert pseudo_positive(kb, "user: north please system: golden wok is in the north") == (ROWS[0], 3)
    assert pseudo_positive(kb, "user: something in the north") == (ROWS[0], 1)  # tie with r2: first wins
    assert pseudo_positive(kb, "user: hello") is None
    assert pseudo_positive(KB(()), "user: north") is None


def test_map_record_ignores_search_attributes() -> None:
    entity = Record(
        "restaurant/the_missing_sock",
        {"name": "the_missing_sock", "area": "east", "food": "international"},
        "restaurant",
    )
    other = Record("restaurant/x", {"name": "the_missing_sock", "area": "west", "food": "x"}, "restaurant")
    candidates = {("restaurant", "the_missing_sock"): [other, entity]}
    assert map_record(ROWS[1], candidates) == entity  # "choice" differs between copies; ignored
    assert map_record(ROWS[0], candidates) is None


def test_warmup_examples_skip_unmatched_turns_and_map_to_the_large_kb() -> None:
    turns = (Turn("north please", "golden_wok is in the north"), Turn("thanks", "bye"))
    split = Split("camrest", "train", (Dialogue("d0", "restaurant", turns, KB(ROWS)),))
    examples, stats = warmup_examples(split, None)
    # Turn 2's context still mentions golden wok, so only a turn with no value at all is skipped.
    assert stats.turns == 2 and stats.used == 2 and examples[0].positive == ROWS[0]
    big = KB((Record("restaurant/golden_wok", dict(ROWS[0].fields), "restaurant"),))
    examples, stats = warmup_examples(split, big)
    assert examples[0].positive.id == "restaurant/golden_wok"
    empty = (Turn("hello", "hi"),)
    _, stats = warmup_examples(Split("camrest", "train", (Dialogue("d1", "r", empty, KB(ROWS)),)), None)
    assert stats.no_match == 1 and stats.used == 0


def _config(tmp_path: Path, out: str, **warmup: object) -> RetrieverTrainConfig:
    model = tmp_path / "tiny-bert"
    if not model.exists():
        save_tiny_model(model)
    overrides = [
        f"output_dir={tmp_path / out}",
        "data.dataset=camrest",
        "data.setting=large",
        f"encoder.model={model}",
        "encoder.max_context_length=64",
        "encoder.max_record_length=32",
        "warmup.batch_size=3",
        "warmup.max_steps=2",
        "warmup.save_every=1",
        "warmup.keep_checkpoints=3",
        "warmup.log_every=1",
        "warmup.warmup_ratio=0.0",
        "warmup.lr=0.001",
        *(f"warmup.{k}={v}" for k, v in warmup.items()),
    ]
    return load_config(RetrieverTrainConfig, None, overrides)


def _params(retriever: Retriever) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in retriever.encoder.state_dict().items()}


def test_two_step_warmup_saves_a_loadable_retriever_and_resumes_exactly(tmp_path: Path) -> None:
    paths = DataPaths(write_camrest_sample(tmp_path / "data"), tmp_path / "cache")

    full = train_retriever(_config(tmp_path, "full"), paths, command="mktod train-retriever --config x")
    assert full.start_step == 0 and full.steps == 2 and full.dev is not None
    out = tmp_path / "full"
    saved = yaml.safe_load((out / "warmup" / "step-000002" / "config.yaml").read_text())
    assert saved["warmup"]["max_steps"] == 2
    assert saved["_provenance"]["command"] == "mktod train-retriever --config x"
    assert len(saved["_provenance"]["data_version"]) == 64
    assert (out / "warmup" / "log.jsonl").read_text().count("\n") == 3  # 2 steps + the final evaluation
    # The saved config reloads as a config (provenance is information, not configuration).
    assert load_config(RetrieverTrainConfig, out / "config.yaml").warmup.max_steps == 2
    retriever = build_retriever(str(out))
    assert isinstance(retriever, Retriever)
    kb = KB(tuple(ROWS))
    assert len(retriever.retrieve("user: chinese food in the north", kb, k=2)) == 2

    # An interrupted run: it crashed after step 1 (step 2 and the final model never written).
    train_retriever(_config(tmp_path, "cut"), paths)
    cut = tmp_path / "cut"
    shutil.rmtree(cut / "warmup" / "step-000002")
    shutil.rmtree(cut / "final")
    assert latest_checkpoint(cut / "warmup") == cut / "warmup" / "step-000001"
    with pytest.raises(ConfigError, match="--resume"):
        train_retriever(_config(tmp_path, "cut"), paths)
    with pytest.raises(ConfigError, match=r"differs .* warmup\.lr"):
        train_retriever(_config(tmp_path, "cut", lr=0.01), paths, resume=True)
    resumed = train_retriever(_config(tmp_path, "cut"), paths, resume=True)
    assert resumed.start_step == 1 and resumed.steps == 2
    assert resumed.last_loss == pytest.approx(full.last_loss, abs=1e-6)
    a = _params(Retriever.load(out / "final"))
    b = _params(Retriever.load(cut / "final"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_a_deadline_stops_the_stage_without_a_final_retriever_and_resume_finishes(tmp_path: Path) -> None:
    paths = DataPaths(write_camrest_sample(tmp_path / "data"), tmp_path / "cache")
    config = _config(tmp_path, "timed", save_every=100, log_every=100)
    # A deadline already passed: one step, saved (though no cadence falls on it), no final evaluation.
    cut = train_retriever(config, paths, deadline=time.monotonic())
    assert cut.out_of_time and cut.steps == 1 and cut.dev is None
    assert cut.output == tmp_path / "timed" / "warmup"
    assert latest_checkpoint(cut.output) == cut.output / "step-000001"
    assert not (tmp_path / "timed" / "final").exists()  # nothing a joint run could take for finished
    done = train_retriever(config, paths, resume=True)
    assert not done.out_of_time and (done.start_step, done.steps) == (1, 2) and done.dev is not None
    assert done.output == tmp_path / "timed" / "final" and done.output.is_dir()
    # Room enough: the run is the same as without a deadline.
    roomy = train_retriever(_config(tmp_path, "roomy"), paths, deadline=time.monotonic() + 3600)
    assert not roomy.out_of_time and roomy.steps == 2


def test_past_deadline_keeps_room_for_a_due_evaluation_a_step_and_a_final_one() -> None:
    now = time.monotonic()
    started = now - 1.0  # the step just taken took a second
    assert not past_deadline(None, started, 100.0, True)
    assert not past_deadline(now + 5, started) and past_deadline(now + 0.5, started)
    assert not past_deadline(now + 5, started, eval_s=3.0)  # 1 s step + 3 s final evaluation
    assert past_deadline(now + 5, started, eval_s=3.0, evaluates_now=True)  # + a due one first: 7 s


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(RetrieverTrainConfig, None, ["warmup.batch_size=1"])
    with pytest.raises(ConfigError, match="stages"):
        load_config(RetrieverTrainConfig, None, ["stages=[mml2]"])
    with pytest.raises(ConfigError, match="SMD has no dataset-level KB"):
        load_config(RetrieverTrainConfig, None, ["data.dataset=smd", "data.setting=large"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(RetrieverTrainConfig, None, ["warmup.learning_rate=0.1"])


@pytest.mark.parametrize("name", ["mwoz", "camrest", "smd"])
def test_shipped_configs_load(name: str) -> None:
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(RetrieverTrainConfig, root / "configs" / f"retriever-{name}.yaml")
    assert cfg.data.dataset == name and cfg.warmup.temperature == 0.05 and cfg.stages == ("warmup",)


def test_shipped_mml_stage_config_loads() -> None:
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(RetrieverTrainConfig, root / "configs" / "retriever-camrest-mml.yaml")
    assert cfg.stages == ("mml",) and cfg.init == "runs/retriever-camrest" and cfg.mml.k == 7
    assert cfg.mml.generator == "runs/camrest-condensed-prompt-cpu/best"


def test_train_retriever_command_takes_max_time_and_says_whether_it_ran_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_camrest_sample(tmp_path / "data")
    config = tmp_path / "retriever.yaml"
    dump_config(_config(tmp_path, "cli"), config)
    args = ["train-retriever", "--config", str(config), "--data-dir", str(data), "--cache-dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        main([*args, "--max-time", "0"])
    assert "--max-time" in capsys.readouterr().err
    assert main([*args, "--max-time", "60"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out_of_time"] is False and printed["steps"] == 2
    assert printed["retriever"] == str(tmp_path / "cli" / "final")
