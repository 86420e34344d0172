"""A generator that fails for good stops an evaluation with an error naming the turns and the cause."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from retriever_helpers import write_camrest_sample

from mktod.datasets import DataPaths, get_loader
from mktod.errors import GeneratorUnavailable
from mktod.evaluate import evaluate_pipeline
from mktod.generators.base import GeneratorInput
from mktod.meta import MetaConfig
from mktod.metrics import EntityVocab
from mktod.pipeline import Pipeline, PipelineConfig
from mktod.retriever import build_retriever


class FailsOnSecondBatch:
    def __init__(self) -> None:
        self.calls = 0

    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        self.calls += 1
        if self.calls == 2:
            raise GeneratorUnavailable("turn 1 of 2: server http://127.0.0.1:9 refused the connection")
        return ["ok"] * len(batch)


def test_failure_names_dataset_split_dialogues_and_cause(tmp_path: Path) -> None:
    paths = DataPaths(write_camrest_sample(tmp_path / "data"), tmp_path / "cache")
    split = get_loader("camrest").load_split("test", paths)
    pipeline = Pipeline(
        build_retriever("frequency"), FailsOnSecondBatch(), MetaConfig(), PipelineConfig(k=2, batch_size=2)
    )
    with pytest.raises(GeneratorUnavailable) as info:
        evaluate_pipeline(
            pipeline, split, EntityVocab.build("camrest", {"name": ["golden_wok"]}), tmp_path / "out"
        )
    message = str(info.value)
    turns = list(split.iter_turns())
    assert message.startswith("camrest test, turns 3-4 of this run (")
    assert f"{turns[2][0].id} turn {turns[2][1] + 1}" in message
    assert message.endswith("turn 1 of 2: server http://127.0.0.1:9 refused the connection")
