"""Run a server as a subprocess on a loopback port until it answers, and stop it afterwards.

The benchmarks and the integration tests start real servers (`mktod serve`, llama-cpp-python's
OpenAI-compatible server) the same way: pick a free port, start the process with its output in a log
file, poll a readiness URL, and on the way out terminate it (kill it if it will not stop). A server that
exits or never becomes ready raises :class:`ServerStartError` carrying the end of its log, so the
caller can say why instead of hanging.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server exited before it was ready, or did not become ready in time."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return "(no output)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(no output)"


@dataclass(frozen=True)
class LocalServer:
    name: str
    url: str  # the base URL the caller talks to
    proc: subprocess.Popen[bytes]
    log: Path

    def exited(self) -> str | None:
        """None while it runs, else what to tell the user: the exit status and the end of its output."""
        if self.proc.poll() is None:
            return None
        status = self.proc.returncode
        return f"{self.name} exited with status {status}; its output ends:\n{log_tail(self.log)}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):  # refused while starting, or a non-200 status
        return False


@contextmanager
def local_server(
    command: Sequence[str],
    url: str,
    ready_path: str,
    log: Path,
    *,
    name: str = "server",
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    poll: float = 0.25,
    stop_timeout: float = 20.0,
    announce: bool = False,
) -> Iterator[LocalServer]:
    """Start ``command`` (output to ``log``), yield once ``url + ready_path`` answers 200, stop it
    on exit.

    ``env`` is added to this process's environment. Raises :class:`ServerStartError` if the process
    exits first or ``timeout`` seconds pass; the message has the command and the end of the log.
    """
    if announce:
        print("starting:", shlex.join(command), file=sys.stderr)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(command), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = LocalServer(name, url, proc, log)
    ready_url = url + ready_path
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready_url):
            if (exited := server.exited()) is not None:
                shown = shlex.join(command)
                raise ServerStartError(f"{exited}\n(it did not become ready; the command was {shown})")
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{name} not ready at {ready_url} after {timeout:.0f} s; "
                    f"its output so far:\n{log_tail(log)}"
                )
            time.sleep(poll)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def llama_cpp_command(
    gguf: Path, port: int, n_ctx: int, threads: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """llama-cpp-python's OpenAI-compatible server for ``gguf`` on the loopback ``port``, and the
    environment it should run with. Its API is at ``http://127.0.0.1:PORT/v1``."""
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", str(n_ctx)]
    if threads is not None:
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    command += ["--host", LOOPBACK, "--port", str(port)]
    # Passive OpenMP waiting: on a shared 2-core machine spinning threads starve each other (3x slower).
    return command, {"OMP_WAIT_POLICY": "PASSIVE"}
