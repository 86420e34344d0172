"""The service's settings, read once from the environment (library code never reads it; STYLE.md §4)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mktod.errors import ConfigError

DEFAULT_SEED_KB = Path(__file__).resolve().parents[1] / "kb" / "demo.jsonl"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

T = TypeVar("T")

ENV_NAMES = {
    "max_message_chars": "MKTOD_MAX_MESSAGE_CHARS",
    "max_turns": "MKTOD_MAX_TURNS",
    "max_body_bytes": "MKTOD_MAX_BODY_BYTES",
    "retry_after_s": "MKTOD_RETRY_AFTER_SECONDS",
    "max_batch": "MKTOD_MAX_BATCH",
}


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told; each field names its ``MKTOD_*`` variable in ``from_env``."""

    state_dir: Path = Path("state")
    api_key: str | None = None
    reads_need_key: bool = False
    max_message_chars: int = 2000
    max_turns: int = 50
    max_body_bytes: int = 1024 * 1024
    rate_limit_per_minute: int = 120
    pipeline: Path | None = None  # None: the pipeline shipped with the package (mktod serve)
    k: int | None = None  # None: the pipeline's own k
    seed_kb: Path | None = DEFAULT_SEED_KB
    retry_after_s: int = 30
    # The generator: "" = the pipeline's own; "openai" = a chat LLM behind an OpenAI-compatible API
    # (the key comes from OPENAI_API_KEY), reading the pipeline's retrieved records.
    generator: str = ""
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-3.5-turbo"
    openai_meta: str = ""  # none | prefix | prompt; "" = the pipeline's meta mode
    openai_max_tokens: int = 64
    threads: int | None = None  # torch CPU threads; None = torch's default
    max_batch: int = 8  # turns queued during a pipeline call are answered together, up to this many

    def __post_init__(self) -> None:
        for name in ("max_message_chars", "max_turns", "max_body_bytes", "retry_after_s", "max_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{ENV_NAMES[name]} must be >= 1, got {getattr(self, name)}")
        for name, value in (("MKTOD_K", self.k), ("MKTOD_THREADS", self.threads)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.generator not in ("", "openai"):
            raise ConfigError(
                f"MKTOD_GENERATOR must be empty (the pipeline's own) or openai, got {self.generator!r}"
            )
        if self.openai_meta not in ("", "none", "prefix", "prompt"):
            raise ConfigError(f"MKTOD_OPENAI_META must be none, prefix or prompt, got {self.openai_meta!r}")
        if self.openai_max_tokens < 1:
            raise ConfigError(f"MKTOD_OPENAI_MAX_TOKENS must be >= 1, got {self.openai_max_tokens}")
        if self.rate_limit_per_minute < 0:
            raise ConfigError("MKTOD_RATE_LIMIT_PER_MINUTE must be >= 0 (0 turns the limit off)")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("setting api_key must not be blank; leave MKTOD_API_KEY unset instead")

    @property
    def db_path(self) -> Path:
        return self.state_dir / "service.sqlite3"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``environ`` (pass ``os.environ``); a bad value raises ConfigError naming it."""
        d = cls()
        api_key = environ.get("MKTOD_API_KEY") or None
        seed = environ.get("MKTOD_SEED_KB")
        pipeline = environ.get("MKTOD_PIPELINE") or None
        return cls(
            state_dir=Path(environ.get("MKTOD_STATE_DIR") or d.state_dir),
            api_key=api_key,
            reads_need_key=_get(environ, "MKTOD_READS_NEED_KEY", _bool, d.reads_need_key),
            max_message_chars=_get(environ, "MKTOD_MAX_MESSAGE_CHARS", _int, d.max_message_chars),
            max_turns=_get(environ, "MKTOD_MAX_TURNS", _int, d.max_turns),
            max_body_bytes=_get(environ, "MKTOD_MAX_BODY_BYTES", _int, d.max_body_bytes),
            rate_limit_per_minute=_get(environ, "MKTOD_RATE_LIMIT_PER_MINUTE", _int, d.rate_limit_per_minute),
            pipeline=Path(pipeline) if pipeline else None,
            k=_get(environ, "MKTOD_K", _optional_int, d.k),
            # An empty MKTOD_SEED_KB turns seeding off.
            seed_kb=d.seed_kb if seed is None else (Path(seed) if seed else None),
            retry_after_s=_get(environ, "MKTOD_RETRY_AFTER_SECONDS", _int, d.retry_after_s),
            generator=(environ.get("MKTOD_GENERATOR") or d.generator).strip().lower(),
            openai_base_url=environ.get("MKTOD_OPENAI_BASE_URL") or d.openai_base_url,
            openai_model=environ.get("MKTOD_OPENAI_MODEL") or d.openai_model,
            openai_meta=(environ.get("MKTOD_OPENAI_META") or d.openai_meta).strip().lower(),
            openai_max_tokens=_get(environ, "MKTOD_OPENAI_MAX_TOKENS", _int, d.openai_max_tokens),
            threads=_get(environ, "MKTOD_THREADS", _optional_int, d.threads),
            max_batch=_get(environ, "MKTOD_MAX_BATCH", _int, d.max_batch),
        )


def _int(raw: str) -> int:
    return int(raw.strip())


def _optional_int(raw: str) -> int | None:
    return int(raw.strip()) if raw.strip() else None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _get(environ: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r} is invalid: {exc}") from None
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"environment variable {name}={raw!r} is invalid: must be >= 0")
    return value
