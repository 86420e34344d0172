"""Retrieval benchmark: Flat, HNSW32 and IVF-PQ `VectorIndex`es over synthetic 384-d KB embeddings.

    python bench/retrieval/run.py                       # 10^3 .. 10^6 records, 1000 queries (~30 min)
    python bench/retrieval/run.py --quick --out /tmp/r  # smoke test: 10^3 and 10^4 records, 50 queries
    python bench/retrieval/run.py --resume              # keep finished rows of an interrupted run

Writes retrieval.json (every measurement and the tuning sweeps), retrieval.md (table + machine) and
retrieval_latency.png (latency vs KB size, log-log). See README.md beside this file for the method.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import matplotlib
import numpy as np
from tqdm import tqdm

from mktod.index import Device, VectorIndex
from mktod.sysinfo import cpu_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): no display on servers and CI

DIM = 384
K = 10
BATCH = 64
MIN_BATCHES = 32  # enough timed batches for a p99 that is more than the single slowest one
RECALL_TARGET = 0.95
TUNE_MARGIN = 0.01  # tune on held-out queries to target + margin so the measured recall clears the target
HNSW_M = 32
EF_CONSTRUCTION = 64
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PQ_M = 32
N_CLUSTERS = 1024
NOISE = 1.0  # within-cluster std relative to the unit-norm centres
SPECTRUM_DECAY = 1.0  # noise variance of direction i ~ i^-decay: embeddings have a decaying spectrum
HNSW_TARGET_MS = 2.0
HNSW_TARGET_SIZE = 1_000_000


@dataclass(frozen=True)
class Row:
    size: int
    index: str
    device: str
    spec: str
    params: dict[str, int]
    build_s: float
    single_p50_ms: float
    single_p99_ms: float
    batch_p50_ms: float
    batch_p99_ms: float
    recall_at_10: float
    tuning: dict[str, float] = field(default_factory=dict)  # sweep value -> recall on tuning queries
    load_avg_1m: float = 0.0  # machine load when timed: other jobs on the same cores inflate latencies


# ---------------------------------------------------------------------- data
class Synthetic:
    """Unit vectors around N_CLUSTERS random centres with anisotropic gaussian noise, all seeded.

    A fixed distribution for every size, so a larger KB is more samples of the same data and queries
    are shared across sizes.
    """

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.centres = _unit(rng.standard_normal((N_CLUSTERS, DIM), dtype=np.float32))
        self.rotation = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)
        variance = np.arange(1, DIM + 1, dtype=np.float64) ** -SPECTRUM_DECAY
        self.std = np.sqrt(variance / variance.sum() * NOISE**2).astype(np.float32)

    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, DIM), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            noise = (rng.standard_normal((m, DIM), dtype=np.float32) * self.std) @ self.rotation
            out[start : start + m] = _unit(self.centres[rng.integers(0, N_CLUSTERS, m)] + noise)
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def exact_top_k(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force (numpy, not faiss) top-k rows and scores [Q, k], in record chunks to bound memory."""
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(x), chunk):
        s = q @ x[start : start + chunk].T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i, best_s


def recall_at_k(found: list[list[str]], x: np.ndarray, q: np.ndarray, kth_score: np.ndarray) -> float:
    """Share of the true top-k found; a hit tied with the true k-th within float error counts (as in
    ann-benchmarks), so a different but equally near record is not a miss."""
    hits = 0
    for row, ids in enumerate(found):
        rows = np.array([int(i) for i in ids], dtype=np.int64)
        hits += int((x[rows] @ q[row] >= kth_score[row] - 1e-5).sum()) if len(rows) else 0
    return hits / (len(found) * K)


# ---------------------------------------------------------------------- measurement
def build(
    spec: str, x: np.ndarray, device: Device, nlist: int, chunk: int = 100_000
) -> tuple[VectorIndex, float]:
    extra = {"ef_construction": EF_CONSTRUCTION} if spec.startswith("HNSW") else {}
    index = VectorIndex(DIM, spec, device=device, **extra)  # type: ignore[arg-type]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    if not index.is_trained:
        # 50 points per list: k-means quality stops improving well before all of a 10^6 KB.
        sample = x[np.random.default_rng(0).permutation(len(x))[: min(len(x), 50 * nlist)]]
        index.train(sample)
    for lo in tqdm(range(0, len(x), chunk), desc=f"  build {spec}", leave=False, disable=len(x) <= chunk):
        index.add([str(i) for i in range(lo, min(lo + chunk, len(x)))], x[lo : lo + chunk])
    return index, time.perf_counter() - start


def time_single(index: VectorIndex, q: np.ndarray) -> tuple[float, float]:
    """p50 / p99 ms of one query at a time on one core, the interactive-serving case."""
    faiss.omp_set_num_threads(1)
    for row in q[:10]:
        index.search(row[None], K)  # warm caches and lazy allocations
    times = []
    for row in tqdm(q, desc="  single", leave=False, disable=len(q) < 200):
        start = time.perf_counter()
        index.search(row[None], K)
        times.append(time.perf_counter() - start)
    return _percentiles(times)


def time_batch(index: VectorIndex, q: np.ndarray) -> tuple[float, float]:
    """p50 / p99 ms of BATCH queries at once, also on one core: the single-core serving target, and
    OpenMP threads that wait on each other turn any other load on the machine into large stalls."""
    faiss.omp_set_num_threads(1)
    n = max(math.ceil(len(q) / BATCH), MIN_BATCHES)
    batches = [np.take(q, range(i * BATCH, (i + 1) * BATCH), axis=0, mode="wrap") for i in range(n)]
    index.search(batches[0], K)
    times = []
    for batch in batches:
        start = time.perf_counter()
        index.search(batch, K)
        times.append(time.perf_counter() - start)
    return _percentiles(times)


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.array(seconds) * 1e3, [50, 99])
    return float(p50), float(p99)


@dataclass(frozen=True)
class Truth:
    """Exact answers for one KB: the records, queries and each query's true k-th best score."""

    x: np.ndarray
    queries: np.ndarray
    kth: np.ndarray

    def recall(self, index: VectorIndex) -> float:
        return recall_at_k(index.search(self.queries, K).ids, self.x, self.queries, self.kth)


def tune(index: VectorIndex, param: str, sweep: Sequence[int], truth: Truth) -> tuple[int, dict[str, float]]:
    """Smallest `param` value reaching the recall target (+ margin) on the tuning queries, else the smallest
    within 0.01 of the best recall seen (IVF-PQ's code size caps its recall below the target)."""
    curve: dict[str, float] = {}
    for value in sweep:
        index.set_search_params(**{param: value})
        curve[str(value)] = truth.recall(index)
        if curve[str(value)] >= RECALL_TARGET + TUNE_MARGIN:
            return value, curve
    best = max(curve.values())
    chosen = next(value for value in sweep if curve[str(value)] >= best - 0.01)
    index.set_search_params(**{param: chosen})
    return chosen, curve


def nlist_for(size: int) -> int:
    """About 4 sqrt(N) lists, a power of two, halved until each list has 39 training points (faiss's)."""
    nlist = 1 << round(math.log2(4 * math.sqrt(size)))
    while nlist > 16 and nlist * 39 > size:
        nlist //= 2
    return nlist


def index_kinds(size: int, device: Device) -> list[tuple[str, str]]:
    # "np": no polysemous training, which only serves Hamming-threshold filtering (unused here) and
    # costs about a minute of PQ32 training; the codes and search are those of plain PQ32.
    kinds = [("Flat", "Flat"), ("HNSW32", f"HNSW{HNSW_M}"), ("IVF-PQ", f"IVF{nlist_for(size)},PQ{PQ_M}np")]
    return [kind for kind in kinds if device == "cpu" or kind[0] != "HNSW32"]  # faiss has no GPU HNSW


def bench_size(
    size: int, data: Synthetic, queries: tuple[np.ndarray, np.ndarray], device: Device, skip: set[str]
) -> Iterator[Row]:
    """Build, tune and time each index kind on `size` records; kinds named in `skip` are left out."""
    kinds = [(name, spec) for name, spec in index_kinds(size, device) if name not in skip]
    if not kinds:
        return
    tune_q, test_q = queries
    x = data.sample(size, seed=size)
    kth = exact_top_k(x, np.concatenate([tune_q, test_q]), K)[1][:, -1]
    tuning, test = Truth(x, tune_q, kth[: len(tune_q)]), Truth(x, test_q, kth[len(tune_q) :])
    for name, spec in kinds:
        index, build_s = build(spec, x, device, nlist_for(size))
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        params: dict[str, int] = {}
        curve: dict[str, float] = {}
        if name == "HNSW32":
            ef, curve = tune(index, "ef_search", EF_SWEEP, tuning)
            params = {"M": HNSW_M, "efConstruction": EF_CONSTRUCTION, "efSearch": ef}
        elif name == "IVF-PQ":
            nlist = nlist_for(size)
            sweep = [p for p in NPROBE_SWEEP if p <= nlist]
            nprobe, curve = tune(index, "nprobe", sweep, tuning)
            params = {"nlist": nlist, "PQ_M": PQ_M, "nprobe": nprobe}
        recall = test.recall(index)
        single, batch = time_single(index, test_q), time_batch(index, test_q)
        print(
            f"  {name:7s} {params} build {build_s:.1f}s single p50/p99 {single[0]:.3f}/{single[1]:.3f} ms "
            f"batch p50/p99 {batch[0]:.2f}/{batch[1]:.2f} ms recall@10 {recall:.3f}",
            flush=True,
        )
        del index
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        yield Row(size, name, device, spec, params, build_s, *single, *batch, recall, curve, load)


# ---------------------------------------------------------------------- reporting
def machine_info() -> dict[str, Any]:
    cpu = cpu_model()
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "faiss_simd": faiss.get_compile_options().strip(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "gpus": gpus,
    }


def write_markdown(path: Path, machine: dict[str, Any], rows: list[Row]) -> None:
    lines = [
        "# Retrieval benchmark",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, faiss {machine['faiss']} "
        f"({machine['faiss_simd']}), numpy {machine['numpy']}, Python {machine['python']}, "
        f"GPUs visible to faiss: {machine['gpus']}.",
        "",
        f"Synthetic {DIM}-d unit vectors ({N_CLUSTERS} gaussian clusters), top-{K} by inner product. "
        f"Single = one query at a time on 1 thread; batch = {BATCH} queries at once, also on 1 thread; "
        "builds use all cores. "
        "Recall@10 against exact brute force (which Flat returns).",
        "",
        "| records | index | device | parameters | build s | single p50 ms | single p99 ms "
        "| batch-64 p50 ms | batch-64 p99 ms | recall@10 |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r.device, r.size, r.index)):
        params = ", ".join(f"{k}={v}" for k, v in r.params.items()) or "-"
        lines.append(
            f"| {r.size:,} | {r.index} | {r.device} | {params} | {r.build_s:.1f} | {r.single_p50_ms:.3f} "
            f"| {r.single_p99_ms:.3f} | {r.batch_p50_ms:.2f} | {r.batch_p99_ms:.2f} | {r.recall_at_10:.3f} |"
        )
    loads = [r.load_avg_1m for r in rows]
    if loads:
        lines += [
            "",
            f"1-minute load average when each row was timed: {min(loads):.1f} to {max(loads):.1f} on "
            f"{machine['cores']} cores (above the core count, other jobs shared the CPU and the "
            "multi-threaded batch timings suffer most).",
        ]
    verdict = hnsw_verdict(rows)
    if verdict:
        lines += ["", verdict]
    path.write_text("\n".join(lines) + "\n")


def hnsw_verdict(rows: list[Row]) -> str:
    hit = [r for r in rows if r.index == "HNSW32" and r.size == HNSW_TARGET_SIZE and r.device == "cpu"]
    if not hit:
        return ""
    r = hit[0]
    met = r.single_p99_ms < HNSW_TARGET_MS and r.recall_at_10 >= RECALL_TARGET
    return (
        f"Target (HNSW at {HNSW_TARGET_SIZE:,} records, one core: p99 single-query < {HNSW_TARGET_MS} ms "
        f"with recall@10 >= {RECALL_TARGET}): **{'met' if met else 'NOT met'}** "
        f"(p99 {r.single_p99_ms:.3f} ms, recall@10 {r.recall_at_10:.3f}, efSearch {r.params['efSearch']})."
    )


def plot(path: Path, rows: list[Row]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("single", "single query, 1 thread"), ("batch", f"batch of {BATCH}, 1 thread"))
    for ax, (kind, title) in zip(axes, panels, strict=True):
        for index_name, device in sorted({(r.index, r.device) for r in rows}):
            pts = sorted(
                (r for r in rows if (r.index, r.device) == (index_name, device)), key=lambda r: r.size
            )
            sizes = [r.size for r in pts]
            label = index_name if device == "cpu" else f"{index_name} ({device})"
            (line,) = ax.plot(sizes, [getattr(r, f"{kind}_p50_ms") for r in pts], "o-", label=f"{label} p50")
            ax.plot(
                sizes,
                [getattr(r, f"{kind}_p99_ms") for r in pts],
                "x--",
                color=line.get_color(),
                label=f"{label} p99",
            )
        if kind == "single":
            ax.axhline(HNSW_TARGET_MS, color="grey", lw=0.8, ls=":", label=f"{HNSW_TARGET_MS} ms target")
        ax.set(xscale="log", yscale="log", xlabel="KB size (records)", ylabel="latency (ms)", title=title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Retrieval latency vs KB size ({DIM}-d, top-{K})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(out: Path, machine: dict[str, Any], config: dict[str, Any], rows: list[Row]) -> None:
    payload = {"machine": machine, "config": config, "results": [asdict(r) for r in rows]}
    tmp = out / "retrieval.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(out / "retrieval.json")  # an interrupted run leaves the last complete file behind
    write_markdown(out / "retrieval.md", machine, rows)
    plot(out / "retrieval_latency.png", rows)


# ---------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument(
        "--queries",
        type=int,
        default=1000,
        help="timed queries (plus as many again, at most 200, for tuning)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/retrieval"))
    parser.add_argument("--quick", action="store_true", help="smoke test: sizes 10^3 and 10^4, 50 queries")
    parser.add_argument("--resume", action="store_true", help="keep rows already in OUT/retrieval.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries = [10**3, 10**4], 50

    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    config = {
        "dim": DIM,
        "k": K,
        "batch": BATCH,
        "queries": args.queries,
        "seed": args.seed,
        "clusters": N_CLUSTERS,
        "noise": NOISE,
        "spectrum_decay": SPECTRUM_DECAY,
        "recall_target": RECALL_TARGET,
        "tune_margin": TUNE_MARGIN,
        "hnsw_M": HNSW_M,
        "ef_construction": EF_CONSTRUCTION,
        "pq_M": PQ_M,
    }
    rows: list[Row] = []
    result_file = args.out / "retrieval.json"
    if args.resume and result_file.exists():
        rows = [Row(**r) for r in json.loads(result_file.read_text())["results"]]
        print(f"resuming: {len(rows)} rows kept from {result_file}")

    data = Synthetic(args.seed)
    n_tune = min(args.queries, 200)
    queries = data.sample(n_tune + args.queries, seed=-1 % 2**32)
    devices: list[Device] = ["cpu", "cuda"] if machine["gpus"] > 0 else ["cpu"]
    for device in devices:
        for size in sorted(args.sizes):
            print(f"[{device}] {size:,} records", flush=True)
            skip = {r.index for r in rows if (r.size, r.device) == (size, device)}
            for row in bench_size(size, data, (queries[:n_tune], queries[n_tune:]), device, skip):
                rows.append(row)
                write_all(args.out, machine, config, rows)
    write_all(args.out, machine, config, rows)
    print(hnsw_verdict(rows) or "(HNSW target needs the 10^6 size)")
    print(f"wrote {args.out}/retrieval.{{json,md}} and retrieval_latency.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
