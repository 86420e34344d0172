"""The paper-size seq2seq runs on a lent GPU, in one command that fits the device tool's limits.

Runs on the device machine, from the repository root, with the kit that ``prepare.py`` packed into
``.device/`` carried along (see README.md beside this file). For one dataset it

1. unpacks the datasets and the encoder (fp16 -> an fp32 model folder) under ``--work``;
2. trains the warm-up retriever (``configs/retriever-D.yaml``; no dev Recall: that needs faiss on the
   dataset-level KB, and the joint runs report dev Recall@K anyway);
3. builds the BERT2BERT backbone from the encoder (``mktod build-backbone --kind bert2bert``);
4. trains each ``--variant`` with its config ``configs/D-condensed-*.yaml`` at the paper's recipe
   (1500 steps x 64 turns) under ``mktod train --max-time``, the variants sharing what is left of
   ``--budget``: a run cut short by time still evaluates on dev and keeps its best checkpoint;
5. scores each best checkpoint on the test split (``mktod evaluate --checkpoint``);
6. writes ``$OUT/summary.json`` (per variant: the command, steps done, test and best dev scores, wall
   times; the machine) and ``$OUT/results.tar.gz`` (each run's config, log, test predictions and
   records): what the device tool brings back. The checkpoints stay there (too large to bring back).

    python3 bench/device/run.py --dataset camrest --variant prompt --variant prompt-nll --budget 500

``--set KEY=VALUE`` goes to every ``mktod train`` (e.g. ``optim.max_steps=600``). Locally (no GPU),
``--device cpu`` and a few ``--set``s run the same steps on the tiny test fixtures.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # prepare.py beside this script
from prepare import KIT, PACKED_WEIGHTS, ROOT  # the kit's layout, as prepare.py writes it
from variants import VARIANTS

# Seconds kept back per variant beside its --max-time (which already holds its final dev evaluation):
# writing last/, the test pass and two process start-ups with their model loads (a BERT2BERT test pass
# over CamRest or SMD should take well under a minute on one H100; measure and adjust with --reserve).
RESERVE_S = 75.0


@dataclass
class Step:
    """One command run, for the summary: what, how long, and what it printed as JSON (if anything)."""

    name: str
    command: list[str]
    wall_s: float
    returncode: int
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Report:
    dataset: str
    device: str
    machine: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


def rel(path: Path) -> str:
    """``path`` as the commands should name it: relative to the repository when inside it, so that
    configs and run.json files written there name the same files once brought back here."""
    return os.path.relpath(path, ROOT) if path.resolve().is_relative_to(ROOT) else str(path)


class Runner:
    """Runs ``python -m mktod.cli ...`` with the kit on the path, offline, and records each step."""

    def __init__(self, kit: Path, work: Path, data_dir: Path, report: Report, log: Path) -> None:
        self.report, self.log = report, log
        site = str(kit / "site")
        path = os.pathsep.join(p for p in (str(ROOT), site, os.environ.get("PYTHONPATH", "")) if p)
        self.env = {
            **os.environ,
            "PYTHONPATH": path,
            "HF_HUB_OFFLINE": "1",
            "MKTOD_DATA_DIR": rel(data_dir),
            "MKTOD_CACHE_DIR": rel(work / "cache"),
        }

    def mktod(self, name: str, args: Sequence[str], *, parse_json: bool = False) -> Step:
        command = [sys.executable, "-m", "mktod.cli", *args]
        started = time.monotonic()
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"\n$ {' '.join(command)}\n")
            fh.flush()
            # stderr (progress bars, warnings) goes to the log; stdout is the command's JSON result.
            done = subprocess.run(
                command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=fh, text=True
            )
            fh.write(done.stdout)
        step = Step(name, ["mktod", *args], round(time.monotonic() - started, 1), done.returncode)
        if done.returncode != 0:
            tail = self.log.read_text(encoding="utf-8").strip().splitlines()[-1:]
            step.error = tail[0] if tail else f"exit status {done.returncode}"
        elif parse_json:
            step.result = json.loads(done.stdout)
        self.report.steps.append(step)
        print(f"[{step.wall_s:7.1f} s] {name}: {'ok' if step.error is None else step.error}", flush=True)
        return step


def unpack_encoder(packed: Path, out: Path) -> Path:
    """The kit's fp16 weights back as an fp32 model folder (training starts from fp32 master weights)."""
    from safetensors.torch import load, save_file

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(packed, out, ignore=shutil.ignore_patterns(PACKED_WEIGHTS, "SOURCE.json"))
    with lzma.open(packed / PACKED_WEIGHTS, "rb") as fh:
        tensors = load(fh.read())
    save_file(
        {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, out / "model.safetensors"
    )
    return out


def machine(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def batching(config: Path, micro: int | None) -> list[str]:
    """The overrides for ``micro`` turns per micro-batch at the config's turns per step (none for None)."""
    if micro is None:
        return []
    import yaml

    optim = yaml.safe_load(config.read_text(encoding="utf-8"))["optim"]
    per_step = int(optim["batch_size"]) * int(optim["grad_accum"])
    if per_step % micro:
        raise SystemExit(f"{rel(config)}: {per_step} turns a step do not split into micro-batches of {micro}")
    return [f"optim.batch_size={micro}", f"optim.grad_accum={per_step // micro}"]


def pack_results(work: Path, names: Sequence[str], out: Path, log: Path) -> None:
    """Each run's config, log, best dev scores and test outputs, and the command log, as one archive."""
    wanted = (
        "config.yaml",
        "log.jsonl",
        "best/dev_scores.json",
        "test/predictions.txt",
        "test/records.jsonl",
    )
    with tarfile.open(out, "w:gz") as tar:
        tar.add(log, arcname=log.name)
        for name in names:
            for part in wanted:
                path = work / name / part
                if path.is_file():
                    tar.add(path, arcname=f"{name}/{part}")
            for run_json in sorted((work / name / "test").glob("*.json")):
                tar.add(run_json, arcname=f"{name}/test/{run_json.name}")


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, choices=["camrest", "smd", "mwoz"])
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: prompt")
    p.add_argument("--budget", type=float, default=500.0, help="seconds for the whole command (default 500)")
    p.add_argument("--reserve", type=float, default=RESERVE_S, help="seconds kept per variant after training")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default=None, help="optim.precision (default: bf16 on cuda, else fp32)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="turns per micro-batch; grad_accum follows, so a step keeps the config's turns per step "
        "(default: 32 on cuda, where the configs' 8 leave most of a GPU idle; the config's elsewhere)",
    )
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--test-limit", type=int, default=None, help="score only the first N test turns")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every mktod train")
    p.add_argument(
        "--retriever-set", action="append", default=[], metavar="KEY=VALUE", help="for the warm-up"
    )
    p.add_argument(
        "--preflight",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="first a 2-step run of the first variant through every step, on 4 dev and test turns; the "
        "long runs only if it passes (default: on cuda)",
    )
    p.add_argument("--kit", type=Path, default=KIT, help="what prepare.py packed (default .device/)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "device")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "device-out")))
    return p.parse_args(argv)


def warm_up_and_build(runner: Runner, args: argparse.Namespace, encoder: Path, precision: str) -> bool:
    """The warm-up retriever and the BERT2BERT backbone every variant starts from; False if either failed."""
    ds, work = args.dataset, args.work
    overrides = sets(
        f"encoder.model={rel(encoder)}",
        f"output_dir={rel(work / f'retriever-{ds}')}",
        "data.eval_split=null",
        f"warmup.precision={precision}",
        *args.retriever_set,
    )
    config = f"configs/retriever-{ds}.yaml"
    warm = runner.mktod(
        "warm-up retriever", ["train-retriever", "--config", config, "--device", args.device, *overrides]
    )
    backbone = rel(work / "backbones" / "bert2bert-minilm")
    built = runner.mktod(
        "backbone",
        ["build-backbone", "--kind", "bert2bert", "--encoder", rel(encoder), "--out", backbone, "--force"],
    )
    return warm.error is None and built.error is None


def train_and_test(
    runner: Runner,
    args: argparse.Namespace,
    variant: str,
    name: str,
    seconds: float,
    extra: Sequence[str],
    test_limit: int | None,
) -> dict[str, Any]:
    """One variant: ``mktod train --max-time`` on its config, then its best checkpoint on test."""
    ds, work = args.dataset, args.work
    config_name, overrides, _ = VARIANTS[variant]
    config = ROOT / "configs" / f"{ds}-{config_name}.yaml"
    overrides = (*overrides, *batching(config, args.micro), *extra)
    paths = (
        f"output_dir={rel(work / name)}",
        f"retriever.init={rel(work / f'retriever-{ds}' / 'final')}",
        f"generator.model={rel(work / 'backbones' / 'bert2bert-minilm')}",
    )
    command = ["train", "--config", rel(config), *sets(*paths, *overrides)]
    command += ["--device", args.device, "--max-time", f"{seconds / 60:.2f}"]
    trained = runner.mktod(f"train {name}", command, parse_json=True)
    entry: dict[str, Any] = {"command": trained.command, "train_wall_s": trained.wall_s}
    if trained.result is None:
        return entry
    entry |= {k: trained.result.get(k) for k in ("steps", "out_of_time", "best_step", "best_entity_f1")}
    limit = ["--limit", str(test_limit)] if test_limit else []
    where = ["--checkpoint", rel(work / name / "best"), "--dataset", ds, "--split", "test"]
    how = [
        "--out",
        rel(work / name / "test"),
        "--device",
        args.device,
        "--batch-size",
        str(args.eval_batch_size),
    ]
    scored = runner.mktod(f"test {name}", ["evaluate", *where, *how, *limit], parse_json=True)
    return entry | {"test": scored.result, "test_wall_s": scored.wall_s}


# The preflight run: every code path of a variant (training steps, dev evaluation, checkpoints, loading
# the best one, the test pass) on the device in well under a minute, so that a fault in one of them
# shows before the budget goes into a long run rather than after it.
PREFLIGHT = ("optim.max_steps=2", "optim.eval_every=1", "optim.eval_limit=4", "optim.save_every=1")


def preflight(runner: Runner, args: argparse.Namespace, variant: str, extra: Sequence[str]) -> bool:
    name = f"{args.dataset}-preflight"
    entry = train_and_test(runner, args, variant, name, 600.0, [*extra, *PREFLIGHT], test_limit=4)
    runner.report.variants[name] = entry
    return entry.get("test") is not None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget
    variants = list(dict.fromkeys(args.variant or ["prompt"]))
    on_gpu = args.device.startswith("cuda")
    precision = args.precision or ("bf16" if on_gpu else "fp32")
    args.micro = args.batch_size or (32 if on_gpu else None)
    kit_dir: Path = args.kit
    if not (kit_dir / "kit.json").is_file():
        raise SystemExit(f"{kit_dir}: no kit; run bench/device/prepare.py here first and carry .device")
    kit = json.loads((kit_dir / "kit.json").read_text(encoding="utf-8"))
    if args.dataset not in kit["datasets"]:
        raise SystemExit(f"the kit holds {kit['datasets']}, not {args.dataset}: prepare it with --dataset")

    work: Path = args.work
    out: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    log.write_text("", encoding="utf-8")
    with tarfile.open(kit_dir / "datasets.tar.xz") as tar:
        tar.extractall(work / "data", filter="data")
    encoder = unpack_encoder(kit_dir / "minilm", work / "minilm")
    report = Report(args.dataset, args.device, machine(args.device))
    runner = Runner(kit_dir, work, work / "data", report, log)

    extra = [f"optim.precision={precision}", f"optim.eval_batch_size={args.eval_batch_size}", *args.set]
    checked = warm_up_and_build(runner, args, encoder, precision)
    if checked and (args.preflight if args.preflight is not None else on_gpu):
        checked = preflight(runner, args, variants[0], extra)
    if checked:
        for i, variant in enumerate(variants):
            # The variants still to run share what is left, each keeping its reserve for after training.
            left = len(variants) - i
            share = (deadline - time.monotonic() - args.reserve * left) / left
            name = f"{args.dataset}-{variant}"
            if share < 30:
                report.variants[name] = {"skipped": f"{share:.0f} s of training time left"}
                continue
            report.variants[name] = train_and_test(runner, args, variant, name, share, extra, args.test_limit)

    pack_results(work, list(report.variants), out / "results.tar.gz", log)
    summary = asdict(report)
    summary["budget_s"], summary["used_s"] = (
        args.budget,
        round(args.budget - (deadline - time.monotonic()), 1),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shown = {name: {k: v for k, v in e.items() if k != "command"} for name, e in report.variants.items()}
    print(json.dumps(shown, indent=1))
    return 1 if any(s.error is not None for s in report.steps) else 0


if __name__ == "__main__":
    sys.exit(main())
