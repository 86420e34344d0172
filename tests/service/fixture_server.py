"""Test fixture (not for production): the tiny-pipeline service in a real uvicorn server.

``python tests/service/fixture_server.py --state-dir DIR --port P`` serves ``make_app`` in its own process,
so tests can SIGKILL it mid-flight and start another on the same state directory. The helpers below start
such a process (or, for tests that need no separate process, a server thread) and wait until it is ready.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from mktod.local_server import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
READY_TIMEOUT_S = 60.0  # importing torch alone takes seconds on a busy 2-core machine


def wait_ready(
    base_url: str, alive: Callable[[], bool] | None = None, timeout: float = READY_TIMEOUT_S
) -> None:
    """Poll ``/readyz`` until it answers 200; ``alive()`` (if given) returning False stops the wait early."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server at {base_url} exited before it was ready ({last})")
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"/readyz answered {r.status_code}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise TimeoutError(f"the server at {base_url} was not ready after {timeout:.0f} s ({last})")


class ServerProcess:
    """One ``fixture_server.py`` process; ``kill()`` is SIGKILL, the crash a test wants to survive."""

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        argv = [sys.executable, str(Path(__file__).resolve()), "--state-dir", str(state_dir)]
        argv += ["--port", str(self.port)]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> ServerProcess:
        try:
            wait_ready(self.base_url, lambda: self.proc.poll() is None, timeout)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(f"{exc}\n--- server log {self.log_path} ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL (no shutdown, no lifespan exit) and reap; a no-op if the process already ended."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn in a thread of this process; yields its base URL and stops it on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, thread.is_alive)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Imported here so `--help` and argument errors need no torch.
    from service_helpers import make_app

    app = make_app(args.state_dir)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
