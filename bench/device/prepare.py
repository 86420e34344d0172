"""Pack what a lent GPU machine lacks into ``.device/`` (git-ignored), within the 64 MiB that travels.

The machine the device tool lends (an H100 or H200; see README.md beside this file) has Python 3.12 with
torch, transformers, sentence-transformers, accelerate, peft, sacrebleu, numpy, pyyaml and tqdm, but no
network and none of: faiss, rank_bm25, the bundled all-MiniLM-L6-v2, the datasets. Everything that goes
there travels with the working tree, and the tree plus the carried paths may hold 64 MiB in all. So the
kit holds:

- ``minilm/``: the encoder's small files and its weights as fp16 safetensors, xz-compressed (41 MB
  instead of 91 MB); ``run.py`` turns them back into an fp32 folder there;
- ``datasets.tar.xz``: the dataset files the chosen datasets' condensed-KB runs read (text: ~10x
  smaller packed);
- ``site/``: the pure-Python modules missing there (rank_bm25), copied from this environment.

faiss stays behind (its wheel alone is 19 MB): condensed-KB training and evaluation do not import it.

    python bench/device/prepare.py --dataset camrest --dataset smd

prints what will travel and fails when it is over the limit. Repacking the encoder takes about a
minute; a kit made from the same weights keeps its packed copy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mktod.encoder import resolve_model
from mktod.fetch import sha256_of
from mktod.paths import default_data_dir

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / ".device"
LIMIT = 64 * 2**20  # the device tool's limit on the working tree plus carried paths
WEIGHTS = "model.safetensors"
PACKED_WEIGHTS = "model.fp16.safetensors.xz"
# What each dataset's loader reads for condensed-KB runs and the retriever warm-up (CamRest's warm-up
# maps records to its dataset-level KB, which adds CDNet's restaurants).
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "camrest": ("camrest/eer_txt/*", "camrest/cdnet/train.json", "camrest/cdnet/val.json",
                "camrest/cdnet/test.json"),
    "smd": ("smd/eer_txt/*",),
    "mwoz": ("mwoz/dfnet_txt/*", "mwoz/graphdialog_nokb_txt/train.txt", "mwoz/multiwoz_db/*"),
}  # fmt: skip
# Pure-Python modules the project imports that the device image lacks (KINDS.md lists its packages).
MISSING_MODULES = ("rank_bm25",)
# The encoder folder's files that are not needed to load it (model cards, training data lists).
SKIP_FILES = frozenset({"README.md", "data_config.json", ".gitattributes", WEIGHTS, "pytorch_model.bin"})


def pack_encoder(source: Path, out: Path) -> dict[str, str]:
    """``source``'s small files as they are and its weights as xz-compressed fp16; reused when the
    weights' digest matches the packed copy's."""
    weights = source / WEIGHTS
    if not weights.is_file():
        raise SystemExit(f"{source}: no {WEIGHTS}; the kit packs safetensors weights only")
    digest = sha256_of(weights)
    stamp = out / "SOURCE.json"
    packed: dict[str, str] = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if packed.get("sha256") == digest and (out / PACKED_WEIGHTS).is_file():
        return packed
    if out.exists():
        shutil.rmtree(out)
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_file() and rel.name not in SKIP_FILES:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / rel)
    # fp16 keeps 11 significant bits of each fp32 weight: the encoder's outputs move by ~1e-3 (cosine),
    # far below what the warm-up's first steps change; fp32 is restored on the device before training.
    half = {name: t.half() if t.is_floating_point() else t for name, t in load_file(weights).items()}
    raw = out / "model.fp16.safetensors"
    save_file(half, raw)
    with raw.open("rb") as src, lzma.open(out / PACKED_WEIGHTS, "wb", preset=9) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    raw.unlink()
    info = {"source": str(source), "sha256": digest, "packed": PACKED_WEIGHTS}
    stamp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def dataset_files(data_dir: Path, datasets: Iterable[str]) -> list[Path]:
    """The files (relative to ``data_dir``) the datasets' condensed-KB runs read; each must exist."""
    files: list[Path] = []
    for name in datasets:
        for pattern in DATASET_FILES[name]:
            found = sorted(p for p in data_dir.glob(pattern) if p.is_file())
            if not found:
                raise SystemExit(f"{data_dir / pattern}: no such file in the data directory ({name})")
            files += [p.relative_to(data_dir) for p in found]
    return files


def pack_datasets(data_dir: Path, files: Sequence[Path], out: Path) -> None:
    # Fixed member metadata, so that the same files give the same archive.
    def plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    with tarfile.open(out, "w:xz", preset=9) as tar:
        for rel in files:
            tar.add(data_dir / rel, arcname=str(rel), filter=plain)


def copy_modules(names: Iterable[str], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"module {name} is not installed here; `make setup` installs it")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":  # a package: copy the folder, without caches
            shutil.copytree(
                origin.parent, out / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(origin, out / origin.name)
        copied.append(name)
    return copied


def travelling_bytes(kit: Path) -> dict[str, int]:
    """Bytes that travel: the files git tracks or would track (the working tree as it is) and the kit."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    tree = sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())
    # Not mktod.export.folder_size: run.py imports this module on the device, which lacks what
    # mktod.export pulls in (rank_bm25 through the retriever; tests/test_bench_device.py blocks it).
    return {"working tree": tree, "kit": sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", action="append", choices=sorted(DATASET_FILES), required=True)
    p.add_argument("--encoder", default="all-MiniLM-L6-v2", help="the encoder to pack (name or folder)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="default ../shared/datasets")
    p.add_argument("--out", type=Path, default=KIT, help="the kit folder (default .device/)")
    args = p.parse_args(argv)

    kit: Path = args.out
    kit.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    encoder = pack_encoder(Path(resolve_model(args.encoder)), kit / "minilm")
    datasets = list(dict.fromkeys(args.dataset))
    files = dataset_files(args.data_dir, datasets)
    pack_datasets(args.data_dir, files, kit / "datasets.tar.xz")
    if (kit / "site").exists():
        shutil.rmtree(kit / "site")
    modules = copy_modules(MISSING_MODULES, kit / "site")
    manifest = {
        "datasets": datasets,
        "dataset_files": [str(f) for f in files],
        "encoder": encoder,
        "modules": modules,
        "torch_dtype_packed": str(torch.float16),
        "made": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (kit / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    sizes = travelling_bytes(kit)
    total = sum(sizes.values())
    for what, size in sizes.items():
        print(f"{what:>13}: {size / 2**20:6.1f} MiB")
    print(
        f"{'total':>13}: {total / 2**20:6.1f} MiB of {LIMIT / 2**20:.0f} ({time.monotonic() - started:.0f} s)"
    )
    if total > LIMIT:
        print(f"over the device tool's {LIMIT / 2**20:.0f} MiB: pack fewer datasets", file=sys.stderr)
        return 1
    try:
        shown = kit.relative_to(ROOT)
    except ValueError:
        shown = kit
    print(f'carry: {shown} (run tool: carry ["{shown}"])')
    return 0


if __name__ == "__main__":
    sys.exit(main())
