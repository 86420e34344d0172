"""The machine facts result tables record, and the warning for bf16 on a CPU that emulates it."""

from __future__ import annotations

from pathlib import Path

from mktod.sysinfo import bf16_cpu_warning, cpu_flags

CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 {extra}

processor\t: 1
flags\t\t: fpu
"""


def test_cpu_flags_reads_the_first_cpu(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra="avx512_bf16"))
    assert cpu_flags(info) == {"fpu", "sse2", "avx", "avx2", "avx512_bf16"}


def test_cpu_flags_none_without_cpuinfo(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "missing") is None
    (tmp_path / "noflags").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "noflags") is None


def _cpuinfo(tmp_path: Path, extra: str) -> Path:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra=extra))
    return info


def test_bf16_warning_names_the_field_to_set(tmp_path: Path) -> None:
    warning = bf16_cpu_warning("bf16", "cpu", "warmup.precision", _cpuinfo(tmp_path, ""))
    assert warning is not None
    assert "--set warmup.precision=fp32" in warning and "avx512_bf16" in warning


def test_no_bf16_warning_where_bf16_is_native_or_not_asked(tmp_path: Path) -> None:
    plain = _cpuinfo(tmp_path, "")
    for native in ("avx512_bf16", "amx_bf16"):
        assert bf16_cpu_warning("bf16", "cpu", "optim.precision", _cpuinfo(tmp_path, native)) is None
    assert bf16_cpu_warning("fp32", "cpu", "optim.precision", plain) is None
    assert bf16_cpu_warning("bf16", "cuda:0", "optim.precision", plain) is None
    # A machine that does not report its flags (not Linux) gets the benefit of the doubt.
    assert bf16_cpu_warning("bf16", "cpu", "optim.precision", tmp_path / "missing") is None


def test_git_commit_names_the_checkout_or_says_unknown(tmp_path: Path) -> None:
    from mktod.sysinfo import git_commit

    head = git_commit(Path(__file__).resolve().parents[1])
    assert len(head.split()[0]) == 12 and all(c in "0123456789abcdef" for c in head.split()[0])
    assert git_commit(tmp_path) == "unknown"
