"""What the chat-LLM generator sends and gets back, apart from the client: the request key and the
on-disk answer cache, parsing an answer, and how long to wait before a retry.

Pure functions and a small file cache, so each is tested on its own (mktod.generators.openai_chat
puts them together).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_SNIPPET = 120  # characters of a bad answer quoted in an error


class MalformedResponse(Exception):
    """The server answered 2xx with something that is not a chat completion (retried, then reported)."""


# ---------------------------------------------------------------------------------------------- cache


def request_key(base_url: str, body: Mapping[str, Any]) -> str:
    """SHA-256 of the request as sent (canonical JSON), so any change of prompt or setting misses."""
    canonical = json.dumps({"base_url": base_url, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """One JSON file per request under ``directory/ab/abcdef....json``, written atomically."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("ignoring unreadable cache entry %s (%s); asking the server again", path, exc)
            return None
        content = entry.get("response") if isinstance(entry, dict) else None
        return content if isinstance(content, str) else None

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every readable entry (``key``, ``request``, ``response``), in key order; for exporting."""
        for path in sorted(self.directory.glob("??/*.json")):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue  # get() warns about it when a request needs it
            if isinstance(entry, dict) and isinstance(entry.get("response"), str):
                yield entry

    def put(self, key: str, body: Mapping[str, Any], content: str) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "key": key,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "request": body,
            "response": content,
        }
        # Write beside the target and rename: a reader (or a resumed run) never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# ------------------------------------------------------------------------------------ answer parsing


def parse_completion(text: str) -> str:
    """The first choice's message content of a chat-completion JSON body, or MalformedResponse."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedResponse(f"invalid JSON ({exc.msg} at char {exc.pos}): {text[:_SNIPPET]!r}") from None
    if not isinstance(data, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        error = data.get("error")
        detail = f"; server error: {str(error)[:_SNIPPET]}" if error else ""
        raise MalformedResponse(f"the answer has no choices{detail}")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise MalformedResponse("choices[0].message.content is missing or not a string")
    return content


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked by ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if any."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        if "retry-after" in lowered:
            value = lowered["retry-after"].strip()
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (ValueError, TypeError):
        return None
    return None


def backoff_delay(
    attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """Wait before retry ``attempt`` (0-based): the server's Retry-After, else capped exponential with
    jitter in [d/2, d] so that many clients rate-limited together do not retry in lockstep."""
    if retry_after is not None:
        return min(retry_after, cap)
    ceiling = min(cap, base * 2.0**attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
