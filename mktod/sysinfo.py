"""The machine a result was measured on, as benchmarks and result tables record it."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU flags of the instructions that make bf16 matrix products fast. Without them PyTorch emulates
# bf16 and an autocast step is many times slower than fp32 (a CamRest warm-up step: over 100 s
# against 7 s on a 2-core AVX2 EPYC).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The first CPU's feature flags, or None where /proc/cpuinfo is missing (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def bf16_cpu_warning(
    precision: str, device: str, key: str, cpuinfo: Path = Path("/proc/cpuinfo")
) -> str | None:
    """A warning to print when bf16 autocast is asked of a CPU without native bf16, else None.

    ``key`` is the config field that asked for it (``optim.precision``), so the warning says what to set.

    Only a warning: the run is still correct, and a CPU that does not report its flags (not Linux)
    may well have them."""
    if precision != "bf16" or not device.startswith("cpu"):
        return None
    flags = cpu_flags(cpuinfo)
    if flags is None or any(f in flags for f in BF16_CPU_FLAGS):
        return None
    return (
        "precision bf16 on a CPU without native bf16 (no "
        + " / ".join(BF16_CPU_FLAGS)
        + " in /proc/cpuinfo): PyTorch emulates it and each step is many times slower than fp32; "
        f"pass --set {key}=fp32"
    )


def git_commit(repo: Path) -> str:
    """The checkout's short commit, marked when tracked files differ from it; "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")
