"""bench/mktod_cli.py: the bench scripts run the real `mktod` beside the interpreter and quote its
error as a results table would (no argparse prefix, repository paths relative)."""

from __future__ import annotations

import pytest
from bench_helpers import ROOT, load_bench_script


def test_run_mktod_returns_stdout_and_quotes_the_last_error_line() -> None:
    cli = load_bench_script("mktod_cli.py")
    assert cli.run_mktod(["--version"]).startswith("mktod ")

    missing = ROOT / "runs" / "no-such-run" / "best"
    with pytest.raises(cli.MktodError) as raised:
        cli.run_mktod(["evaluate", "--checkpoint", str(missing), "--dataset", "camrest", "--split", "test"])
    message = str(raised.value)
    assert message.startswith("runs/no-such-run/best: not a complete pipeline checkpoint")
    assert "mktod: error:" not in message and str(ROOT) not in message
