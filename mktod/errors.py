"""Errors meant for people: each says what was wrong and where."""

from __future__ import annotations

from pathlib import Path


class MktodError(Exception):
    """Base class for errors the CLI reports without a traceback."""


class DataError(MktodError):
    """A dataset or KB file is missing or malformed."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line


class ConfigError(MktodError):
    """A config file or option is invalid."""


class GeneratorUnavailable(MktodError):
    """The generator backend (e.g. a chat server) could not produce an answer for a turn, even after
    retries; the message names the turn and the cause. The service answers it with 503 + Retry-After."""
