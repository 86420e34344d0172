"""What the train-step benchmarks share: their options and the interleaved, timed optimizer steps.

Step kinds are interleaved within every repetition so that background load hits them alike; results
are medians and ratios to a baseline kind measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results" / "train_step"


def add_step_arguments(ap: argparse.ArgumentParser, reps: int) -> None:
    """The batch shape and repetition options of both train-step benchmarks."""
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2, help="turns per step")
    ap.add_argument("--k", type=int, default=7, help="records per turn")
    ap.add_argument("--context-tokens", type=int, default=150)
    ap.add_argument("--record-tokens", type=int, default=50)
    ap.add_argument("--target-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--warmup", type=int, default=1)
    # One thread by default: on a shared small CPU, a multi-threaded op waits for its slowest thread and
    # step times scatter; single-threaded steps are slower but comparable. 0 keeps torch's default.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS)


def timed_steps(
    kinds: Mapping[str, Callable[[], torch.Tensor]],
    params: Sequence[torch.nn.Parameter],
    device: torch.device,
    reps: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Seconds of each kind's step (forward + backward + clip + AdamW), ``reps`` interleaved rounds."""
    opt = torch.optim.AdamW(list(params), lr=1e-4, weight_decay=0.01)

    def step(loss_fn: Callable[[], torch.Tensor]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in kinds}
    for rep in range(warmup + reps):
        for name, fn in kinds.items():
            seconds = step(fn)
            if rep >= warmup:
                times[name].append(seconds)
        print(
            f"rep {rep + 1}/{warmup + reps}: "
            + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items() if t),
            flush=True,
        )
    return times


def summary(times: Mapping[str, list[float]], baseline: Callable[[str], str]) -> dict[str, Any]:
    """Medians, minimums and the ratios of each kind to its ``baseline(kind)``."""
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "median_s": median,
        "min_s": {name: min(t) for name, t in times.items()},
        "all_s": dict(times),
        "ratio_to_nll": {name: median[name] / median[baseline(name)] for name in times},
        # Per-repetition ratios pair steps run seconds apart, so slow drifts in machine load cancel.
        "paired_ratio_median": {
            name: statistics.median(t / n for t, n in zip(times[name], times[baseline(name)], strict=True))
            for name in times
        },
    }


def ratio_table(r: Mapping[str, Any], labels: Mapping[str, str], baseline: Callable[[str], str]) -> list[str]:
    """The markdown table of a :func:`summary`: one row per kind in ``labels``, ratios to its baseline."""
    lines = [
        "| step | median (s) | ratio of medians | median of paired ratios | ratio of minimums |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in labels.items():
        lines.append(
            f"| {label} | {r['median_s'][name]:.3f} | {r['ratio_to_nll'][name]:.2f} "
            f"| {r['paired_ratio_median'][name]:.2f} "
            f"| {r['min_s'][name] / r['min_s'][baseline(name)]:.2f} |"
        )
    return lines
