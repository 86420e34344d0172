"""Test fixture (not for production): a tiny deterministic pipeline from real mktod pieces.

The frequency retriever and the real meta-knowledge tagging, with a template generator that answers from
the top-ranked record, so tests can see exactly which record a reply came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from mktod.errors import GeneratorUnavailable
from mktod.generators.base import GeneratorInput
from mktod.meta import MetaConfig
from mktod.pipeline import Pipeline, PipelineConfig
from mktod.retriever import build_retriever
from mktod.types import KB
from service.app import create_app
from service.settings import Settings

API_KEY = "test-key-0123456789"


class TopRecordGenerator:
    """Test fixture: '{name} is in the {area}' from the best record."""

    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        out = []
        for item in batch:
            if not item.records:
                out.append("I found nothing.")
                continue
            fields = item.records[0].record.fields
            out.append(f"{fields.get('name', '?')} is in the {fields.get('area', '?')}")
        return out


class DownGenerator:
    """Test fixture: a backend that is down."""

    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        raise GeneratorUnavailable("turn 1: server http://127.0.0.1:9 refused the connection")


def make_pipeline(kb: KB | None = None, generator: object | None = None) -> Pipeline:
    gen = generator if generator is not None else TopRecordGenerator()
    return Pipeline(build_retriever("frequency"), gen, MetaConfig(), PipelineConfig(k=3))  # type: ignore[arg-type]


def make_settings(state_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"state_dir": state_dir, "api_key": API_KEY, "rate_limit_per_minute": 1000}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_app(state_dir: Path, generator: object | None = None, **overrides: object) -> FastAPI:
    return create_app(make_settings(state_dir, **overrides), lambda kb: make_pipeline(kb, generator))
