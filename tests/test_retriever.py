from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from retriever_helpers import tiny_encoder, write_camrest_sample

from mktod.cli_retriever import add_retriever_commands
from mktod.datasets import DataPaths
from mktod.errors import ConfigError
from mktod.evaluate_retriever import evaluate_retriever, score_split
from mktod.kb import linearise
from mktod.retriever import (
    BM25Retriever,
    FrequencyRetriever,
    Retriever,
    build_retriever,
    rank,
    tokens,
    value_counts,
)
from mktod.types import KB, Dialogue, Record, Split, Turn

KB3 = KB(
    (
        Record(
            "a", {"name": "pizza_hut_city_centre", "area": "centre", "food": "italian", "pricerange": "cheap"}
        ),
        Record("b", {"name": "golden_wok", "area": "north", "food": "chinese", "pricerange": "moderate"}),
        Record(
            "c", {"name": "the_missing_sock", "area": "east", "food": "international", "pricerange": "cheap"}
        ),
    ),
    name="kb3",
)


def test_tokens_and_whole_word_value_counts() -> None:
    assert tokens("Golden_Wok, 01223_350688!") == ["golden", "wok", "01223", "350688"]
    text = "user: cheap food in the east ? system: the missing sock is cheap . user: the missing sock then"
    # a: cheap x2; b: nothing ("north" is not said); c: cheap x2 + east + the missing sock x2.
    assert value_counts(KB3, text) == [2, 0, 5]
    assert value_counts(KB3, "user: eastern food") == [0, 0, 0]  # "east" must be a whole word


def test_rank_is_stable_on_ties_and_caps_k() -> None:
    hits = rank(KB3, [1.0, 3.0, 1.0], k=5)
    assert [h.record.id for h in hits] == ["b", "a", "c"]
    assert [h.rank for h in hits] == [1, 2, 3]
    with pytest.raises(ValueError):
        rank(KB3, [0, 0, 0], k=0)


def test_frequency_retriever() -> None:
    hits = FrequencyRetriever().retrieve("user: something cheap please", KB3, k=2)
    assert [h.record.id for h in hits] == ["a", "c"]  # tie broken by KB order
    assert hits[0].score == 1.0
    assert FrequencyRetriever().retrieve("user: hi", KB(()), k=3) == ()


def test_bm25_retriever_prefers_matching_record() -> None:
    retriever = BM25Retriever()
    retriever.build_index(KB3)
    hits = retriever.retrieve("user: any chinese place up north ?", KB3, k=3)
    assert hits[0].record.id == "b" and hits[0].score > hits[1].score
    assert len(retriever.retrieve_many(["user: x", "user: y"], [KB3, KB3], k=1)) == 2
    with pytest.raises(ValueError, match="one KB per context"):
        retriever.retrieve_many(["user: x"], [KB3, KB3], k=1)


def test_dense_retriever_ranks_by_dot_product_and_index_agrees() -> None:
    encoder = tiny_encoder()
    retriever = Retriever(encoder)
    contexts = ["user: cheap italian food in the centre", "user: chinese food in the north"]
    direct = retriever.retrieve_many(contexts, [KB3, KB3], k=3)
    ctx = encoder.embed_contexts(contexts)
    rec = encoder.embed_records([linearise(r) for r in KB3])
    for row, hits in enumerate(direct):
        expected = np.argsort(-(ctx[row] @ rec.T), kind="stable")
        assert [h.record.id for h in hits] == [KB3.records[i].id for i in expected]
        assert [h.rank for h in hits] == [1, 2, 3]
        assert hits[0].score == pytest.approx(float((ctx[row] @ rec.T).max()), abs=1e-5)
    retriever.build_index(KB3)  # the large-scale path: FAISS search instead of direct scoring
    indexed = retriever.retrieve_many(contexts, [KB3, KB3], k=2)
    for a, b in zip(direct, indexed, strict=True):
        assert [h.record.id for h in a[:2]] == [h.record.id for h in b]
        assert [h.score for h in a[:2]] == pytest.approx([h.score for h in b], abs=1e-5)
    assert retriever.retrieve("user: hi", KB(()), k=3) == ()


def test_dense_scores_are_differentiable() -> None:
    retriever = Retriever(tiny_encoder())
    scores = retriever.scores(["user: cheap food", "user: north"], list(KB3))
    assert scores.shape == (2, 3)
    scores.sum().backward()
    assert any(p.grad is not None for p in retriever.encoder.parameters())


def test_build_retriever_registry_and_checkpoints(tmp_path: Path) -> None:
    assert isinstance(build_retriever("bm25"), BM25Retriever)
    assert isinstance(build_retriever("frequency"), FrequencyRetriever)
    saved = Retriever(tiny_encoder())
    saved.save(tmp_path / "run" / "final")
    for spec in (tmp_path / "run" / "final", tmp_path / "run"):  # a training output folder works too
        loaded = build_retriever(str(spec))
        assert isinstance(loaded, Retriever)
        a = loaded.retrieve("user: cheap food", KB3, k=3)
        b = saved.retrieve("user: cheap food", KB3, k=3)
        assert [h.record.id for h in a] == [h.record.id for h in b]
    with pytest.raises(ConfigError, match="bm25, frequency"):
        build_retriever(str(tmp_path / "missing"))


def _split() -> Split:
    turns = (
        Turn("cheap italian please", "pizza_hut_city_centre is cheap", ("pizza_hut_city_centre", "cheap")),
        Turn("anything in the north ?", "golden_wok . your ref is xyz", ("golden_wok", "xyz")),
    )
    return Split("camrest", "test", (Dialogue("d0", "restaurant", turns, KB3),))


def test_score_split_counts_only_kb_values() -> None:
    scores = score_split(FrequencyRetriever(), _split(), None, ks=(1, 3))
    assert scores.pairs == 3 and scores.turns == 2  # "xyz" is not a KB value
    # Turn 1: a ranks first. Turn 2: the context still says "cheap" twice and "centre" once, which
    # outweighs "north", so golden_wok is only found in the top 3.
    assert scores.recall == pytest.approx({1: 200 / 3, 3: 100.0})
    large = score_split(BM25Retriever(), _split(), KB3, ks=(1,))
    assert large.setting == "large" and large.kb_size == 3


def test_evaluate_retriever_and_cli_on_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the handler sets it; keep it out of other tests
    data = write_camrest_sample(tmp_path / "data")
    paths = DataPaths(data, tmp_path / "cache")
    condensed = evaluate_retriever("camrest", "condensed", "test", "frequency", paths)
    assert condensed.turns > 0 and condensed.recall[7] == 100.0  # 3-row KBs: top-7 holds everything
    large = evaluate_retriever("camrest", "large", "test", "bm25", paths, ks=(1, 3))
    assert large.kb_size == 3
    with pytest.raises(ConfigError, match="setting"):
        evaluate_retriever("camrest", "huge", "test", "bm25", paths)  # type: ignore[arg-type]

    parser = argparse.ArgumentParser()
    add_retriever_commands(parser.add_subparsers())
    args = parser.parse_args(
        [
            "evaluate-retriever",
            "--dataset",
            "camrest",
            "--setting",
            "large",
            "--split",
            "test",
            "--retriever",
            "frequency",
            "--data-dir",
            str(data),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"recall@1", "recall@3", "recall@5", "recall@7", "pairs"} <= set(out)


def test_update_index_embeds_only_changed_records_and_matches_a_rebuild(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service's path after a KB edit: one embedding per new or changed record."""
    from mktod.types import Record

    retriever = Retriever(tiny_encoder())
    calls: list[int] = []
    embed = retriever.encoder.embed_records

    def counting(texts: list[str], batch_size: int = 64) -> np.ndarray:
        calls.append(len(texts))
        return embed(texts, batch_size)

    monkeypatch.setattr(retriever.encoder, "embed_records", counting)
    assert retriever.update_index(KB3) == 3 and calls == [3]  # nothing to reuse yet
    first, *rest = KB3.records
    edited = KB(
        (
            Record(first.id, {**first.fields, "area": "north"}, first.domain),
            *rest,
            Record("new", {"name": "x"}),
        )
    )
    assert retriever.update_index(edited) == 2 and calls == [3, 2]  # the edited record and the new one
    assert retriever.update_index(edited) == 0 and calls == [3, 2]
    contexts = ["user: cheap italian food in the north", "user: x"]
    incremental = retriever.retrieve_many(contexts, [edited, edited], k=4)
    fresh = Retriever(retriever.encoder)
    fresh.build_index(edited)
    rebuilt = fresh.retrieve_many(contexts, [edited, edited], k=4)
    for a, b in zip(incremental, rebuilt, strict=True):
        assert [h.record.id for h in a] == [h.record.id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    retriever.build_index(edited)  # training's path: always re-embeds (the encoder may have moved)
    assert calls[-1] == 4


def test_condensed_retrieval_runs_without_faiss_and_an_index_says_what_to_install(tmp_path: Path) -> None:
    """faiss is imported only where an index is built: a machine without it (a GPU box carrying the
    pure-Python dependencies only) still trains and evaluates on condensed KBs."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "faiss.py").write_text("raise ImportError('blocked in this test')\n", encoding="utf-8")
    tests_dir = Path(__file__).parent
    script = """
import sys
import mktod.train, mktod.evaluate, mktod.pipeline  # the condensed training path imports no faiss
from retriever_helpers import tiny_encoder
from test_retriever import KB3
from mktod.retriever import Retriever
retriever = Retriever(tiny_encoder())
hits = retriever.retrieve("user: cheap italian food in the centre", KB3, k=2)
assert [h.rank for h in hits] == [1, 2], hits
try:
    retriever.build_index(KB3)
except ImportError as exc:
    print("refused:", exc)
else:
    sys.exit("build_index worked without faiss")
"""
    env = {**os.environ, "PYTHONPATH": f"{blocked}:{tests_dir}"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout
    assert "pip install faiss-cpu" in done.stdout and "Condensed-KB training" in done.stdout
