"""Turns that arrive while the pipeline is busy are answered together in one batched call."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from service_helpers import TopRecordGenerator, make_pipeline, make_settings

from mktod.errors import GeneratorUnavailable
from mktod.generators.base import GeneratorInput
from mktod.types import Record, Utterance
from service.metrics import Metrics
from service.routes_deps import Engine
from service.store import Store


class GatedGenerator(TopRecordGenerator):
    """Holds its first call until released, and records every batch size."""

    def __init__(self, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        self.sizes.append(len(batch))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail:
            raise GeneratorUnavailable("backend down")
        return super().generate(batch)


def engine(tmp_path: Path, generator: GatedGenerator, max_batch: int) -> Engine:
    store = Store(tmp_path / "db.sqlite3")
    store.create_record(Record("r1", {"name": "bramble kitchen", "area": "north"}))
    settings = make_settings(tmp_path, max_batch=max_batch)
    return Engine(settings, store, make_pipeline(generator=generator), Metrics())


def _ask(eng: Engine, text: str, out: dict[str, object]) -> None:
    try:
        out[text] = eng.respond([Utterance("user", text)]).text
    except Exception as exc:
        out[text] = exc


@pytest.mark.parametrize(("waiting", "max_batch", "expected"), [(5, 8, [1, 5]), (5, 2, [1, 2, 2, 1])])
def test_queued_turns_share_pipeline_calls(
    tmp_path: Path, waiting: int, max_batch: int, expected: list[int]
) -> None:
    gen = GatedGenerator()
    eng = engine(tmp_path, gen, max_batch)
    answers: dict[str, object] = {}
    first = threading.Thread(target=_ask, args=(eng, "first", answers))
    first.start()
    assert gen.entered.wait(10)
    others = [threading.Thread(target=_ask, args=(eng, f"q{i}", answers)) for i in range(waiting)]
    for t in others:
        t.start()
    while len(eng._queue) < waiting:  # all of them queued behind the busy pipeline
        threading.Event().wait(0.01)
    gen.release.set()
    for t in [first, *others]:
        t.join(10)
    assert gen.sizes == expected
    assert all(a == "bramble kitchen is in the north" for a in answers.values()) and len(answers) == 6
    text = eng.metrics.render()
    assert f"mktod_pipeline_turns_total {waiting + 1}" in text
    assert f"mktod_pipeline_batches_total {len(expected)}" in text


def test_an_error_reaches_every_turn_of_its_batch(tmp_path: Path) -> None:
    gen = GatedGenerator(fail=True)
    eng = engine(tmp_path, gen, 8)
    answers: dict[str, object] = {}
    threads = [threading.Thread(target=_ask, args=(eng, f"q{i}", answers)) for i in range(3)]
    threads[0].start()
    assert gen.entered.wait(10)
    for t in threads[1:]:
        t.start()
    while len(eng._queue) < 2:
        threading.Event().wait(0.01)
    gen.release.set()
    for t in threads:
        t.join(10)
    assert len(answers) == 3 and all(isinstance(a, GeneratorUnavailable) for a in answers.values())
