from __future__ import annotations

from pathlib import Path

import pytest

from mktod.errors import ConfigError
from service.settings import DEFAULT_SEED_KB, Settings


def test_defaults_and_env() -> None:
    s = Settings.from_env({})
    assert (s.max_message_chars, s.max_turns, s.max_body_bytes, s.rate_limit_per_minute) == (
        2000,
        50,
        1024 * 1024,
        120,
    )
    assert s.api_key is None and not s.reads_need_key and s.seed_kb == DEFAULT_SEED_KB
    s = Settings.from_env(
        {
            "MKTOD_STATE_DIR": "/tmp/x",
            "MKTOD_API_KEY": "k",
            "MKTOD_READS_NEED_KEY": "yes",
            "MKTOD_SEED_KB": "",
        }
    )
    assert s.state_dir == Path("/tmp/x") and s.api_key == "k" and s.reads_need_key and s.seed_kb is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MKTOD_MAX_TURNS", "many"),
        ("MKTOD_MAX_TURNS", "0"),
        ("MKTOD_READS_NEED_KEY", "maybe"),
        ("MKTOD_RATE_LIMIT_PER_MINUTE", "-1"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
