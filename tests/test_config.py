from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mktod.config import dump_config, load_config
from mktod.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-4
    steps: int = 10
    ks: tuple[int, ...] = (1, 3)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    setting: Literal["condensed", "large"] = "condensed"
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    assert load_config(Outer) == Outer()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: y\ninner:\n  steps: 5\n  lr: 1\n")
    cfg = load_config(Outer, cfg_file, ["inner.ks=[7]", "setting=large", "path=/tmp/a"])
    assert cfg == Outer(name="y", setting="large", inner=Inner(lr=1.0, steps=5, ks=(7,)), path="/tmp/a")
    assert isinstance(cfg.inner.lr, float)
    # YAML 1.1 reads 5e-5 as a string; a float field still takes it.
    assert load_config(Outer, None, ["inner.lr=5e-5"]).inner.lr == 5e-5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nmae: y\n", "unknown key nmae"),
        ("inner:\n  step: 3\n", "unknown key inner.step"),
        ("inner:\n  steps: many\n", "inner.steps: expected an integer"),
        ("setting: huge\n", "setting: 'huge' is not one of"),
        ("inner: 3\n", "inner: expected a mapping"),
        ("name: [unclosed\n", "invalid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(Outer, cfg_file)
    assert str(cfg_file) in str(info.value)


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"expected key\.sub=value"):
        load_config(Outer, None, ["inner.steps"])


def test_dump_round_trip_with_provenance(tmp_path: Path) -> None:
    cfg = Outer(name="z", inner=Inner(ks=(1, 5)))
    out = tmp_path / "run" / "config.yaml"
    dump_config(cfg, out, extra={"command": "mktod train", "data_version": "abc"})
    assert "_provenance" in out.read_text()
    assert load_config(Outer, out) == cfg


@dataclass(frozen=True)
class Before:
    a: int = 1
    added_later: str = "default"


@dataclass(frozen=True)
class Later:
    inner: Before = field(default_factory=Before)
    lr: float = 0.1


def test_resume_check_treats_a_setting_added_later_as_its_default(tmp_path: Path) -> None:
    """A run saved before a setting existed resumes under a config that leaves it at its default."""
    from mktod.config import check_same_config

    saved = tmp_path / "config.yaml"
    saved.write_text("inner:\n  a: 2\nlr: 0.1\n_provenance:\n  command: x\n")
    check_same_config(load_config(Later, None, ["inner.a=2"]), saved)
    with pytest.raises(ConfigError, match=r"inner\.added_later"):
        check_same_config(load_config(Later, None, ["inner.a=2", "inner.added_later=other"]), saved)
    dump_config(Later(), saved)
    with pytest.raises(ConfigError, match=r"in inner\.a, lr"):
        check_same_config(Later(Before(a=3), lr=0.2), saved)
