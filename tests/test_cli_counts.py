"""Count options of `mktod evaluate` are checked by argparse, which names the option in its error."""

from __future__ import annotations

import pytest

from mktod.cli import main

BASE = ["evaluate", "--generator", "openai", "--dataset", "camrest", "--split", "test"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--demos", "-1", "--demos: must be at least 0, got -1"),
        ("--demos", "two", "--demos: expected a whole number, got 'two'"),
        ("--openai-concurrency", "0", "--openai-concurrency: must be at least 1, got 0"),
        ("--openai-max-retries", "-2", "--openai-max-retries: must be at least 0, got -2"),
        ("--k", "0", "--k: must be at least 1, got 0"),
        ("--limit", "0", "--limit: must be at least 1, got 0"),
        ("--demo-k", "0", "--demo-k: must be at least 1, got 0"),
    ],
)
def test_bad_counts_are_refused_naming_the_option(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_zero_is_a_count_where_it_means_none() -> None:
    from mktod.cli_common import non_negative_int, positive_int

    assert non_negative_int("0") == 0 and positive_int("3") == 3
