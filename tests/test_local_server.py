"""The subprocess-server helper the benchmarks and integration tests share, with real processes."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

from mktod.local_server import ServerStartError, free_port, llama_cpp_command, local_server


def test_yields_once_the_server_answers_and_stops_it_after(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ready").write_text("yes", encoding="utf-8")
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    command += ["--directory", str(tmp_path / "www")]
    url = f"http://127.0.0.1:{port}"
    with local_server(command, url, "/ready", tmp_path / "log" / "server.log", timeout=60) as server:
        assert server.url == url
        assert server.exited() is None
        with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
            assert response.read() == b"yes"
    assert server.proc.poll() is not None  # terminated on the way out
    assert "GET /ready" in (tmp_path / "log" / "server.log").read_text(encoding="utf-8")


def test_a_server_that_exits_raises_with_its_status_and_output(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "server.log"
    with (
        pytest.raises(ServerStartError) as info,
        local_server(command, url, "/", log, name="toy", timeout=60),
    ):
        pytest.fail("yielded a server that never started")
    message = str(info.value)
    assert "toy exited with status 3" in message
    assert "bad flag --nope" in message
    assert "the command was" in message


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('warming up', flush=True); time.sleep(600)"]
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "server.log"
    with (
        pytest.raises(ServerStartError, match=r"toy not ready at .*/v1/models after 3 s") as info,
        local_server(command, url, "/v1/models", log, name="toy", timeout=3.0, stop_timeout=5),
    ):
        pytest.fail("yielded a server that never answered")
    assert "warming up" in str(info.value)


def test_llama_cpp_command_binds_loopback_and_sets_threads() -> None:
    command, env = llama_cpp_command(Path("/m/model.gguf"), 8123, n_ctx=4096, threads=2)
    assert command[1:3] == ["-m", "llama_cpp.server"]
    assert command[command.index("--model") + 1] == "/m/model.gguf"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8123"
    assert command[command.index("--n_threads") + 1] == "2"
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert "--n_threads" not in llama_cpp_command(Path("m.gguf"), 1, n_ctx=512)[0]
