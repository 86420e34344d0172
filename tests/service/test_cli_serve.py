"""`mktod serve`: options, settings precedence and the no-pipeline error (no server is started here)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from service_helpers import make_pipeline

from mktod.cli import build_parser, main
from mktod.cli_serve import service_environment


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--host", "--port", "--state-dir", "--checkpoint"):
        assert flag in out


def test_missing_pipeline_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MKTOD_PIPELINE", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "no trained offline pipeline ships" in err and "--checkpoint runs/NAME/best" in err


def test_missing_checkpoint_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_config_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "service.env"
    config.write_text(
        "# comment\nMKTOD_STATE_DIR=from-file\nMKTOD_K='5'\nexport MKTOD_MAX_TURNS=9\nMKTOD_PIPELINE=a\n"
    )
    env = {"MKTOD_K": "6", "MKTOD_PIPELINE": "b"}
    merged = service_environment(_args("--config", str(config)), env)
    assert merged["MKTOD_STATE_DIR"] == "from-file" and merged["MKTOD_MAX_TURNS"] == "9"
    assert merged["MKTOD_K"] == "6" and merged["MKTOD_PIPELINE"] == "b"
    flags = _args("--config", str(config), "--state-dir", "s", "--checkpoint", "c")
    merged = service_environment(flags, env)
    assert merged["MKTOD_STATE_DIR"] == "s" and merged["MKTOD_PIPELINE"] == "c"


def test_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.env"
    config.write_text("OTHER=1\n")
    assert main(["serve", "--config", str(config), "--checkpoint", str(tmp_path)]) == 2
    assert "bad.env:1" in capsys.readouterr().err


def test_serve_loads_checkpoint_and_runs_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import mktod.checkpoint

    loaded: list[tuple[Path, str]] = []
    ran: dict[str, Any] = {}

    def fake_load(directory: Path, device: str) -> object:
        loaded.append((Path(directory), device))
        return make_pipeline()

    def fake_run(app: object, **kwargs: Any) -> None:
        ran.update(kwargs, app=app)

    monkeypatch.setattr(mktod.checkpoint, "load_pipeline", fake_load)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    state = tmp_path / "state"
    argv = ["serve", "--checkpoint", str(tmp_path), "--state-dir", str(state), "--port", "8123"]
    assert main(argv) == 0
    assert loaded == [(tmp_path, "cpu")]
    assert ran["host"] == "127.0.0.1" and ran["port"] == 8123
    assert "/v1/chat/completions" in ran["app"].openapi()["paths"]
