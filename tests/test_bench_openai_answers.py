"""bench/openai/run_quality.py: the server's answers outlive the machine's answer cache.

A run on a new machine seeds the cache from the kept answers file, so the requests an earlier run
answered are not sent again; the file is rewritten from the cache, for this model only."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_helpers import load_bench_script

from mktod.errors import ConfigError
from mktod.generators.openai_wire import ResponseCache, request_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_bench_script("openai/run_quality.py")


def _ask(cache: ResponseCache, model: str, prompt: str, answer: str) -> str:
    """What the generator does after a server answered: store the answer under the request's key."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    key = request_key("http://127.0.0.1:8765/v1", body)
    cache.put(key, body, answer)
    return key


def test_answers_survive_a_new_machine(script: ModuleType, tmp_path: Path) -> None:
    first = ResponseCache(tmp_path / "machine-1")
    model = script.MODEL
    keys = [_ask(first, model, f"turn {i}", f"answer {i} – café") for i in range(3)]
    _ask(first, "another-model", "turn 0", "not this bench's")
    answers = tmp_path / "answers.jsonl"
    assert script.export_answers(first, answers) == 3
    kept = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
    assert [e["key"] for e in kept] == sorted(keys) and {e["model"] for e in kept} == {model}

    second = ResponseCache(tmp_path / "machine-2")  # the cache of the first machine is gone
    assert script.seed_cache(second, answers) == 3
    assert [second.get(k) for k in keys] == [f"answer {i} – café" for i in range(3)]
    assert script.seed_cache(second, answers) == 0  # nothing is written twice

    # The second machine answers one more turn; the file then holds both runs' answers.
    new = _ask(second, model, "turn 3", "answer 3")
    assert script.export_answers(second, answers) == 4
    assert new in answers.read_text(encoding="utf-8")


def test_a_damaged_answers_file_names_its_line(script: ModuleType, tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"key": "a", "model": "m", "response": "r"}\n{"key": "b"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"answers.jsonl, line 2: not a kept answer"):
        script.seed_cache(ResponseCache(tmp_path / "cache"), answers)


def test_no_answers_file_seeds_nothing(script: ModuleType, tmp_path: Path) -> None:
    assert script.seed_cache(ResponseCache(tmp_path / "cache"), tmp_path / "missing.jsonl") == 0


def test_the_table_note_counts_the_scored_slice_from_the_data(script: ModuleType, tmp_path: Path) -> None:
    """The sentence under the table (turns, dialogues, KB sizes) is computed, so it stays true when a
    later run extends --limit."""
    from retriever_helpers import _DIALOGUES, write_camrest_sample

    from mktod.datasets import DataPaths

    paths = DataPaths(write_camrest_sample(tmp_path / "data"), tmp_path / "cache")
    first_turns = len(_DIALOGUES[0][1])
    part = script.scored_slice("camrest", first_turns + 1, paths, k=1)
    assert (part.turns, part.dialogues) == (first_turns + 1, 2)
    sizes = [len(rows) for rows, turns in _DIALOGUES for _ in turns][: first_turns + 1]
    assert part.largest_kb == max(sizes) and part.over_k == sum(n > 1 for n in sizes)
    every = sum(len(turns) for _, turns in _DIALOGUES)
    whole = script.scored_slice("camrest", 10_000, paths)
    assert (whole.turns, whole.dialogues, whole.split_turns) == (every, len(_DIALOGUES), every)
    note = script.describe_slices({"camrest": part})
    assert note.startswith(f"Each row covers camrest: {first_turns + 1} turns from 2 dialogues,")
    assert note.endswith(f"({part.over_k} of the turns with more than 1).")  # the k it was counted with
