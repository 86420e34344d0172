"""Chat-LLM generator over the OpenAI chat-completions API (METHOD.md §5: in-context learning only).

Any OpenAI-compatible server works (OpenAI itself, llama-cpp-python's server, vLLM, ...): the request is
``POST {base_url}/chat/completions`` with the messages of :mod:`mktod.generators.prompts`.

Robustness, all of it done here rather than inside the client so that it is tested and deterministic:

- **Retries**: 429, 408, 409, 5xx, connection errors, timeouts and malformed answers (invalid JSON, no
  choices) are retried up to ``max_retries`` times with exponential backoff and jitter; a ``Retry-After``
  (or ``retry-after-ms``) header is honoured, up to ``backoff_max``. Other statuses (400, 401, 404, ...)
  fail at once: retrying a bad key or a wrong model name only wastes time.
- **Errors**: a final failure raises :class:`GeneratorUnavailable` naming the turn, the server, the model
  and the last cause. The API key never appears in reprs, logs or error messages.
- **Concurrency**: at most ``max_concurrency`` requests are in flight per generator, across threads.
- **Cache**: with ``cache_dir`` set, each answer is stored under the SHA-256 of the whole request (base
  URL, model, messages, temperature, max_tokens, seed, stop), written atomically; an interrupted evaluation
  resumes where it stopped and a repeated one sends no request at all.

The request key, cache, answer parsing and retry timing live in :mod:`mktod.generators.openai_wire`.
Library code reads no environment variable: the caller passes the API key (the CLI reads
``$OPENAI_API_KEY``); without one a placeholder is sent, which local servers ignore.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import openai
import torch

from mktod.errors import ConfigError, GeneratorUnavailable
from mktod.generators.base import GeneratorConfig, GeneratorInput, register_generator
from mktod.generators.openai_wire import (
    MalformedResponse,
    ResponseCache,
    backoff_delay,
    parse_completion,
    request_key,
    retry_after_seconds,
)
from mktod.generators.prompts import DemonstrationPool, Message, build_messages, spoken
from mktod.generators.reply import clean_reply
from mktod.meta import MetaConfig, MetaMode

logger = logging.getLogger(__name__)

_NO_KEY = "no-key"  # sent when no key is given; the official client refuses to start without one
_RETRY_STATUSES = frozenset({408, 409, 429})
_SNIPPET = 120


@dataclass(frozen=True)
class OpenAIConfig:
    """Where and how to ask a chat model. ``api_key`` is hidden from repr; see :meth:`public_dict`."""

    model: str = "gpt-3.5-turbo"
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 0.0
    max_tokens: int = 128
    timeout: float = 60.0  # seconds per attempt
    max_retries: int = 5
    backoff_base: float = 1.0  # first retry waits about this long, doubling each time
    backoff_max: float = 60.0  # cap on one wait, Retry-After included
    max_concurrency: int = 4
    cache_dir: str | None = None
    meta: MetaMode | None = None  # None: the pipeline's MetaConfig.mode
    demos: int = 0  # in-context demonstrations per turn (needs a DemonstrationPool)
    seed: int | None = None  # sent to the server when set; also seeds the retry jitter
    stop: tuple[str, ...] = ()  # stop sequences, e.g. ("\n",): responses are one line

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
            (self.timeout > 0, "timeout must be > 0 seconds"),
            (self.max_retries >= 0, "max_retries must be >= 0"),
            (self.backoff_base >= 0 and self.backoff_max >= 0, "backoff times must be >= 0"),
            (self.max_concurrency >= 1, "max_concurrency must be >= 1"),
            (self.demos >= 0, "demos must be >= 0"),
            (self.meta in (None, "none", "prefix", "prompt"), "meta must be none, prefix or prompt"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"openai config: {message}")

    def public_dict(self) -> dict[str, object]:
        """The settings without the key, e.g. to save beside results."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
        out["api_key"] = "***" if self.api_key else None
        return out


@dataclass(frozen=True)
class ChatStats:
    requests: int  # HTTP attempts sent
    cache_hits: int
    retries: int


# ------------------------------------------------------------------------------------------ generator


class OpenAIChatGenerator:
    """The :class:`~mktod.generators.base.Generator` protocol over a chat-completions server."""

    def __init__(
        self,
        config: OpenAIConfig,
        meta: MetaConfig | None = None,
        demonstrations: DemonstrationPool | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.mode: MetaMode = config.meta or (meta.mode if meta is not None else "prompt")
        if config.demos > 0 and demonstrations is None:
            raise ConfigError(
                f"openai config asks for {config.demos} demonstrations per turn but no DemonstrationPool "
                "was given; build one from the training split, or set demos=0"
            )
        self.demonstrations = demonstrations
        self.cache = ResponseCache(config.cache_dir) if config.cache_dir else None
        self._sleep = sleep
        self._rng = random.Random(config.seed if config.seed is not None else 0)
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "cache_hits": 0, "retries": 0}
        # The client's own retries are off: the loop in _complete does them, testably.
        self._client = openai.OpenAI(
            api_key=config.api_key or _NO_KEY,
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=0,
        )

    def __repr__(self) -> str:
        return f"OpenAIChatGenerator({self.config!r}, mode={self.mode!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIChatGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> ChatStats:
        with self._lock:
            return ChatStats(**self._counts)

    # ------------------------------------------------------------------ requests
    def request_bodies(self, batch: Sequence[GeneratorInput]) -> list[dict[str, Any]]:
        """The exact JSON bodies :meth:`generate` would send for ``batch`` (demonstrations included)."""
        n = self.config.demos
        pool = self.demonstrations
        demos = pool.select_many([x.context for x in batch], n) if pool is not None and n > 0 else None
        return [
            self._body(build_messages(x.context, x.records, self.mode, demos[i] if demos else ()))
            for i, x in enumerate(batch)
        ]

    def _body(self, messages: list[Message]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if self.config.seed is not None:
            body["seed"] = self.config.seed
        if self.config.stop:
            body["stop"] = list(self.config.stop)
        return body

    def generate(self, batch: Sequence[GeneratorInput], labels: Sequence[str] | None = None) -> list[str]:
        """One response per turn; ``labels`` name the turns in errors (default: position and user text)."""
        if labels is not None and len(labels) != len(batch):
            raise ValueError(f"{len(labels)} labels for {len(batch)} turns")
        if not batch:
            return []
        names = (
            list(labels)
            if labels is not None
            else [_default_label(i, x, len(batch)) for i, x in enumerate(batch)]
        )
        bodies = self.request_bodies(batch)
        workers = min(len(batch), self.config.max_concurrency)
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mktod-openai")
        try:
            futures = [
                executor.submit(self._complete, body, name) for body, name in zip(bodies, names, strict=True)
            ]
            replies = [clean_reply(f.result()) for f in futures]
        except BaseException:
            # Stop what has not started; finished answers are already cached for a resumed run.
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
        return replies

    def _complete(self, body: dict[str, Any], label: str) -> str:
        key = request_key(self.config.base_url, body)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self._count("cache_hits")
                return cached
        attempts = self.config.max_retries + 1
        cause = "no attempt made"
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                content = self._send(body)
            except openai.APIStatusError as exc:
                cause = self._status_cause(exc)
                if exc.status_code not in _RETRY_STATUSES and exc.status_code < 500:
                    raise self._failure(label, cause, attempt + 1) from None
                retry_after = retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                cause = f"no answer within the {self.config.timeout:g} s timeout"
            except openai.APIConnectionError as exc:
                cause = f"cannot connect ({self._redact(str(exc.__cause__ or exc))}); is the server running?"
            except MalformedResponse as exc:
                cause = f"malformed answer: {self._redact(str(exc))}"
            else:
                if self.cache is not None:
                    self.cache.put(key, body, content)
                return content
            if attempt + 1 < attempts:
                delay = backoff_delay(
                    attempt, self.config.backoff_base, self.config.backoff_max, self._rng, retry_after
                )
                self._count("retries")
                logger.warning(
                    "%s: %s; retry %d/%d in %.2f s", label, cause, attempt + 1, attempts - 1, delay
                )
                self._sleep(delay)
        raise self._failure(label, cause, attempts)

    def _send(self, body: dict[str, Any]) -> str:
        with self._slots:
            self._count("requests")
            raw = self._client.chat.completions.with_raw_response.create(**body)
            text = raw.http_response.text
        return parse_completion(text)

    def _status_cause(self, exc: openai.APIStatusError) -> str:
        detail = exc.response.text[:_SNIPPET].strip() if exc.response is not None else ""
        cause = f"HTTP {exc.status_code}" + (f": {self._redact(detail)}" if detail else "")
        if exc.status_code in (401, 403):
            cause += " (check the API key; it is not shown here)"
        elif exc.status_code == 404:
            cause += f" (check the model name {self.config.model!r} and the base URL)"
        return cause

    def _failure(self, label: str, cause: str, attempts: int) -> GeneratorUnavailable:
        tries = f"after {attempts} attempts" if attempts > 1 else "at the first attempt"
        return GeneratorUnavailable(
            f"{label}: chat completion from {self.config.base_url} (model {self.config.model!r}) failed "
            f"{tries}: {cause}"
        )

    def _redact(self, text: str) -> str:
        key = self.config.api_key
        if not key:
            return text
        # Longest first, down to 8 characters: servers echo keys whole, cut, or as a truncated snippet.
        for n in range(len(key), min(len(key), 8) - 1, -1):
            text = text.replace(key[:n], "***")
        return text

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


def _default_label(index: int, item: GeneratorInput, size: int) -> str:
    context = item.context
    last = context if isinstance(context, str) else (context[-1].text if context else "")
    snippet = spoken(last)[:60]
    return f"turn {index + 1} of {size} in the batch (user: {snippet!r})"


@register_generator("openai")
def _build(cfg: GeneratorConfig, meta: MetaConfig, device: torch.device) -> OpenAIChatGenerator:
    # The registry knows only GeneratorConfig; base URL, key, cache and demonstrations need the
    # OpenAIChatGenerator constructor (see the module docstring of mktod.cli_generate).
    return OpenAIChatGenerator(OpenAIConfig(model=cfg.model, max_tokens=cfg.max_target_tokens), meta)
