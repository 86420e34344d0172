"""The chat-LLM generator over the real `openai` client, against a deterministic server on loopback."""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openai")

from openai_server import FakeOpenAIServer, closed_port_url

from mktod.errors import ConfigError
from mktod.generators.base import GeneratorConfig, GeneratorInput, build_generator
from mktod.generators.openai_chat import GeneratorUnavailable, OpenAIChatGenerator, OpenAIConfig
from mktod.generators.openai_wire import (
    MalformedResponse,
    backoff_delay,
    parse_completion,
    request_key,
    retry_after_seconds,
)
from mktod.generators.prompts import (
    LLM_TAG_EXPLANATION,
    PREFIX_TAG_EXPLANATION,
    TASK_INSTRUCTION,
    DemonstrationPool,
)
from mktod.meta import MetaConfig, tag_hits
from mktod.retriever import FrequencyRetriever
from mktod.types import KB, Dialogue, Hit, Record, Split, Turn, Utterance

SECRET = "sk-test-SECRET-0123456789abcdef"

WOK = Record("wok", {"name": "golden_wok", "area": "north", "food": "chinese"})
PIZZA = Record("pizza", {"name": "pizza_hut", "area": "centre", "food": "italian"})
CONTEXT = (
    Utterance("user", "i want chinese food in the north"),
    Utterance("system", "golden_wok is in the north"),
    Utterance("user", "what is the address of golden_wok ?"),
)


def tagged() -> tuple:  # type: ignore[type-arg]
    # Scores 2 and 0: softmax gives 0.881 (high) and 0.119 (low); golden_wok is named in the context.
    return tag_hits([Hit(WOK, 2.0, 1), Hit(PIZZA, 0.0, 2)], CONTEXT)


def turn(text: str = "what is the address of golden_wok ?") -> GeneratorInput:
    return GeneratorInput(context=(*CONTEXT[:2], Utterance("user", text)), records=tagged())


def fast(server_url: str, **kw: object) -> OpenAIConfig:
    """Config for tests: tiny backoff so retries cost nothing."""
    base: dict[str, object] = {
        "model": "test-model",
        "base_url": server_url,
        "backoff_base": 0.001,
        "max_retries": 3,
    }
    base.update(kw)
    return OpenAIConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    with FakeOpenAIServer() as s:
        yield s


# ------------------------------------------------------------------------------------ prompt content

KNOWLEDGE = {
    "none": (
        "Knowledge:\n1. name golden wok ; area north ; food chinese\n"
        "2. name pizza hut ; area centre ; food italian"
    ),
    "prefix": (
        "Knowledge:\n"
        "1. <old-entity> <high-confidence> <1th-entity> name golden wok ; area north ; food chinese\n"
        "2. <new-entity> <low-confidence> <2th-entity> name pizza hut ; area centre ; food italian"
    ),
    "prompt": (
        "Knowledge:\n"
        "1. name golden wok ; area north ; food chinese. It has high possibility that this entity is top-1 "
        "important. This entity has appeared before.\n"
        "2. name pizza hut ; area centre ; food italian. It has low possibility that this entity is top-2 "
        "important. This is a new entity."
    ),
}
EXPLANATION = {"none": None, "prefix": PREFIX_TAG_EXPLANATION, "prompt": LLM_TAG_EXPLANATION}


@pytest.mark.parametrize("mode", ["none", "prefix", "prompt"])
def test_messages_carry_records_in_each_meta_rendering(server: FakeOpenAIServer, mode: str) -> None:
    with OpenAIChatGenerator(fast(server.base_url, meta=mode)) as gen:
        assert gen.generate([turn()]) == ["reply to: User: what is the address of golden wok ?"]
    (req,) = server.requests
    messages = req.body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "i want chinese food in the north"
    assert messages[2]["content"] == "golden wok is in the north"  # `_` joins read as words
    assert messages[3]["content"] == KNOWLEDGE[mode] + "\n\nUser: what is the address of golden wok ?"
    system = messages[0]["content"]
    assert system.startswith(TASK_INSTRUCTION)
    explanation = EXPLANATION[mode]
    assert system == (TASK_INSTRUCTION if explanation is None else f"{TASK_INSTRUCTION}\n\n{explanation}")
    assert req.body["model"] == "test-model"
    assert req.body["temperature"] == 0.0
    assert req.body["max_tokens"] == 128


def test_mode_defaults_to_the_pipeline_meta_config(server: FakeOpenAIServer) -> None:
    gen = OpenAIChatGenerator(fast(server.base_url), MetaConfig(mode="prefix"))
    assert gen.mode == "prefix"
    assert "<1th-entity>" in gen.request_bodies([turn()])[0]["messages"][-1]["content"]


def test_optional_request_fields() -> None:
    (body,) = OpenAIChatGenerator(OpenAIConfig(seed=3, stop=("\n",), max_tokens=16)).request_bodies([turn()])
    assert (body["seed"], body["stop"], body["max_tokens"]) == (3, ["\n"], 16)
    (plain,) = OpenAIChatGenerator(OpenAIConfig()).request_bodies([turn()])
    assert "seed" not in plain and "stop" not in plain


def test_registry_builds_the_openai_kind() -> None:
    gen = build_generator(GeneratorConfig(kind="openai", model="gpt-x", max_target_tokens=32))
    assert isinstance(gen, OpenAIChatGenerator)
    assert (gen.config.model, gen.config.max_tokens) == ("gpt-x", 32)


# ------------------------------------------------------------------------------------------- retries


def test_retries_429_500_and_timeout_then_succeeds(server: FakeOpenAIServer) -> None:
    server.state.retry_after = "7"
    server.state.sleep_s = 1.0
    server.script("429", "500", "sleep")
    waits: list[float] = []
    with OpenAIChatGenerator(fast(server.base_url, timeout=0.3), sleep=waits.append) as gen:
        assert gen.generate([turn()]) == ["reply to: User: what is the address of golden wok ?"]
        assert gen.stats().retries == 3
    assert len(server.requests) == 4
    assert waits[0] == 7.0  # Retry-After honoured
    assert 0.0005 <= waits[1] <= 0.002 and 0.001 <= waits[2] <= 0.004  # exponential, jittered


def test_malformed_answers_are_retried_then_reported_with_the_turn(server: FakeOpenAIServer) -> None:
    server.script("ok", "malformed", "no_choices", "malformed", "malformed")
    gen = OpenAIChatGenerator(fast(server.base_url, max_concurrency=1), sleep=lambda s: None)
    with pytest.raises(GeneratorUnavailable) as err:
        gen.generate([turn("first ?"), turn("second ?")])
    message = str(err.value)
    assert "turn 2 of 2 in the batch (user: 'second ?')" in message
    assert "after 4 attempts" in message and "malformed answer: invalid JSON" in message
    assert server.base_url in message and "test-model" in message


def test_labels_name_the_turn(server: FakeOpenAIServer) -> None:
    server.script("no_choices", "no_choices")
    gen = OpenAIChatGenerator(fast(server.base_url, max_retries=1), sleep=lambda s: None)
    with pytest.raises(GeneratorUnavailable, match=r"^smd test dialogue 7 turn 2: .*has no choices"):
        gen.generate([turn()], labels=["smd test dialogue 7 turn 2"])


def test_server_down_is_a_clear_error() -> None:
    url = closed_port_url()
    gen = OpenAIChatGenerator(fast(url, max_retries=1), sleep=lambda s: None)
    with pytest.raises(GeneratorUnavailable, match=r"cannot connect .*is the server running") as err:
        gen.generate([turn()])
    assert url in str(err.value)


def test_client_errors_are_not_retried_and_never_show_the_key(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the client's and httpx's included
    server.script("500", "401")
    config = fast(server.base_url, api_key=SECRET)
    gen = OpenAIChatGenerator(config, sleep=lambda s: None)
    with pytest.raises(GeneratorUnavailable, match="HTTP 401") as err:
        gen.generate([turn()])
    assert len(server.requests) == 2  # the 500 was retried, the 401 was not
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # the key did reach the server
    shown = [str(err.value), repr(err.value), repr(config), str(config), repr(gen), caplog.text]
    shown.append(json.dumps(config.public_dict()))
    assert all(SECRET not in text for text in shown)
    assert "***" in str(err.value) and "check the API key" in str(err.value)
    assert "SECRET" not in gen._redact(f"Incorrect API key provided: {SECRET[:20]}...")  # a cut echo too


# --------------------------------------------------------------------------------------------- cache


def test_cache_answers_a_repeated_request_without_the_server(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = fast(server.base_url, cache_dir=str(tmp_path))
    first = OpenAIChatGenerator(config).generate([turn()])
    again = OpenAIChatGenerator(config).generate([turn()])  # a new process would build a new generator
    assert again == first
    assert len(server.requests) == 1
    assert not list(tmp_path.rglob(".tmp-*"))  # atomic writes leave nothing behind
    (entry,) = tmp_path.rglob("*.json")
    assert json.loads(entry.read_text())["request"] == server.requests[0].body
    # Any change of the request is a different key.
    OpenAIChatGenerator(fast(server.base_url, cache_dir=str(tmp_path), temperature=0.5)).generate([turn()])
    assert len(server.requests) == 2


def test_interrupted_evaluation_resumes_where_it_stopped(server: FakeOpenAIServer, tmp_path: Path) -> None:
    batch = [turn(f"question {i} ?") for i in range(4)]
    config = fast(server.base_url, cache_dir=str(tmp_path), max_concurrency=1, max_retries=0)
    server.script("ok", "ok", "500")  # the third turn fails: the "interruption"
    with pytest.raises(GeneratorUnavailable, match="turn 3 of 4"):
        OpenAIChatGenerator(config).generate(batch)
    sent_before = len(server.requests)
    replies = OpenAIChatGenerator(config).generate(batch)
    assert replies == [f"reply to: User: question {i} ?" for i in range(4)]
    resent = [r.body["messages"][-1]["content"].splitlines()[-1] for r in server.requests[sent_before:]]
    # Answered turns come from the cache; the failed one is asked again (the 4th may have finished
    # before the failure was seen, then it is cached too).
    assert resent[0] == "User: question 2 ?"
    assert set(resent) <= {"User: question 2 ?", "User: question 3 ?"}


def test_request_key_covers_the_whole_request() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "max_tokens": 8,
    }
    key = request_key("http://a/v1", body)
    assert key == request_key("http://a/v1", dict(reversed(body.items())))  # order does not matter
    assert key != request_key("http://b/v1", body)
    assert key != request_key("http://a/v1", {**body, "max_tokens": 9})


# --------------------------------------------------------------------------------------- concurrency


def test_concurrency_bound_is_respected_across_threads(server: FakeOpenAIServer) -> None:
    server.state.delay_s = 0.15
    gen = OpenAIChatGenerator(fast(server.base_url, max_concurrency=3))
    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(gen.generate([turn(f"q{i}") for i in range(5)])))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.requests) == 10 and len(results) == 2
    assert server.state.max_in_flight == 3


def test_replies_keep_batch_order(server: FakeOpenAIServer) -> None:
    gen = OpenAIChatGenerator(fast(server.base_url, max_concurrency=4))
    replies = gen.generate([turn(f"q{i}") for i in range(6)])
    assert replies == [f"reply to: User: q{i}" for i in range(6)]


# ------------------------------------------------------------------------------------ demonstrations


def dialogue(did: str, lines: list[tuple[str, str]], kb: tuple[Record, ...] = (WOK, PIZZA)) -> Dialogue:
    return Dialogue(did, "restaurant", tuple(Turn(u, r) for u, r in lines), KB(kb))


TRAIN = Split(
    "camrest",
    "train",
    (
        dialogue("tr-pizza", [("cheap italian food in the centre please", "pizza_hut serves italian food")]),
        dialogue("tr-wok", [("i would like chinese food in the north", "golden_wok serves chinese food")]),
        dialogue("tr-bye", [("thank you , goodbye", "goodbye")]),
    ),
)
TEST = Split("camrest", "test", (dialogue("te-1", [("chinese food in the north , please", "?")]),))


def pool(encoder: object | None = None) -> DemonstrationPool:
    return DemonstrationPool(TRAIN, FrequencyRetriever(), MetaConfig(), k_records=2, encoder=encoder)  # type: ignore[arg-type]


def test_demonstrations_are_the_most_similar_training_turns() -> None:
    p = pool()
    demos = p.select(TEST.dialogues[0].context(0), 2)
    assert [d.source for d in demos] == [
        "camrest train dialogue tr-wok turn 0",
        "camrest train dialogue tr-pizza turn 0",
    ]
    assert demos[0].response == "golden_wok serves chinese food"
    assert [r.record for r in demos[0].records] == [WOK, PIZZA]  # retrieved by the frequency retriever
    assert p.similarity == "bm25"


class BagOfWords:
    """A stand-in for the dense encoder: normalised word counts over a fixed vocabulary."""

    vocab = ("chinese", "italian", "north", "centre", "thank", "goodbye")

    def embed_contexts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:  # type: ignore[type-arg]
        rows = np.array([[t.split().count(w) for w in self.vocab] for t in texts], dtype=np.float32)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def test_dense_similarity_uses_the_encoder() -> None:
    p = pool(BagOfWords())
    assert p.similarity == "dense"
    (demo,) = p.select((Utterance("user", "thank you , goodbye"),), 1)
    assert demo.source == "camrest train dialogue tr-bye turn 0"


def test_demonstrations_never_come_from_the_evaluated_split() -> None:
    p = pool()
    p.check_disjoint(TEST)
    with pytest.raises(ConfigError, match="overlaps the evaluated camrest train"):
        p.check_disjoint(TRAIN)
    leaked = Split("camrest", "test", (TRAIN.dialogues[0],))
    with pytest.raises(ConfigError, match="1 shared dialogues"):
        p.check_disjoint(leaked)
    train_ids = {d.id for d in TRAIN.dialogues}
    for demos in p.select_many([d.context(0) for d in TEST.dialogues], 3):
        assert {d.source.split()[3] for d in demos} <= train_ids


def test_demonstrations_go_into_the_system_prompt(server: FakeOpenAIServer) -> None:
    gen = OpenAIChatGenerator(fast(server.base_url, meta="prefix", demos=1), demonstrations=pool())
    gen.generate([GeneratorInput(TEST.dialogues[0].context(0), tagged())])
    system = server.requests[0].body["messages"][0]["content"]
    assert system.endswith(
        "Examples:\n\nExample 1\nKnowledge:\n"
        "1. <old-entity> <high-confidence> <1th-entity> name golden wok ; area north ; food chinese\n"
        "2. <new-entity> <low-confidence> <2th-entity> name pizza hut ; area centre ; food italian\n"
        "Dialogue:\nUser: i would like chinese food in the north\nSystem: golden wok serves chinese food"
    )


def test_demos_without_a_pool_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no DemonstrationPool"):
        OpenAIChatGenerator(OpenAIConfig(demos=2))


# ------------------------------------------------------------------------------------- pure helpers


def test_parse_completion() -> None:
    ok = {"choices": [{"message": {"role": "assistant", "content": "hello"}}]}
    assert parse_completion(json.dumps(ok)) == "hello"
    for bad, why in [
        ("{", "invalid JSON"),
        ("[]", "expected a JSON object"),
        ('{"choices": []}', "no choices"),
        ('{"error": {"message": "overloaded"}}', "overloaded"),
        ('{"choices": [{"message": {"content": null}}]}', "content is missing"),
    ]:
        with pytest.raises(MalformedResponse, match=why):
            parse_completion(bad)


def test_retry_after_and_backoff() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None
    rng = random.Random(0)
    assert backoff_delay(0, 1.0, 60.0, rng, retry_after=90.0) == 60.0  # capped
    delays = [backoff_delay(a, 1.0, 60.0, rng) for a in range(8)]
    assert all(min(60.0, 2.0**a) / 2 <= d <= min(60.0, 2.0**a) for a, d in enumerate(delays))


def test_config_validation_and_public_dict() -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        OpenAIConfig(max_concurrency=0)
    with pytest.raises(ConfigError, match="meta must be"):
        OpenAIConfig(meta="tags")  # type: ignore[arg-type]
    assert OpenAIConfig(api_key=SECRET).public_dict()["api_key"] == "***"
    assert OpenAIConfig().public_dict()["api_key"] is None


# ----------------------------------------------------------------------------------------------- CLI


@pytest.mark.data
def test_cli_generates_scores_and_resumes_from_the_cache(
    data_dir: Path,
    server: FakeOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mktod.cli import main

    monkeypatch.setenv("TEST_OPENAI_KEY", SECRET)
    out = tmp_path / "out"
    argv = [
        "evaluate",
        "--generator",
        "openai",
        *("--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache")),
        *("--dataset", "camrest", "--split", "test", "--meta", "prompt", "--demos", "1", "--limit", "3"),
        *(
            "--openai-base-url",
            server.base_url,
            "--openai-model",
            "m",
            "--openai-api-key-env",
            "TEST_OPENAI_KEY",
        ),
        *("--out", str(out)),
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["turns"] == 3 and summary["requests"] == 3 and summary["demo_similarity"] == "bm25"
    assert {"bleu", "entity_f1", "entity_precision", "entity_recall", "recall@1", "recall@7"} <= set(summary)
    assert len((out / "predictions.txt").read_text().splitlines()) == 3
    assert len((out / "records.jsonl").read_text().splitlines()) == 3
    system = server.requests[0].body["messages"][0]["content"]
    assert (
        "Example 1" in system
        and "possibility that this entity is top-1 important"
        in server.requests[0].body["messages"][-1]["content"]
    )
    assert SECRET not in (out / "run.json").read_text()
    # The same command again: every answer comes from the cache.
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["requests"], again["cache_hits"], len(server.requests)) == (0, 3, 3)
    assert again["bleu"] == summary["bleu"]
