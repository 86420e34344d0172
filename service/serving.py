"""The pipeline the service runs, from its settings: a checkpoint folder (the shipped one by default),
optionally with its generator swapped for a chat LLM behind an OpenAI-compatible API (issue #5 item 5)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import cast

from mktod.checkpoint import is_complete, load_pipeline, load_spec
from mktod.errors import ConfigError
from mktod.meta import MetaMode
from mktod.paths import default_pipeline_dir
from mktod.pipeline import Pipeline
from service.settings import Settings

NO_PIPELINE = (
    "no pipeline to serve: the shipped default ({default}) is missing from this installation. Train "
    "one (e.g. `mktod train --config configs/smoke.yaml`) and pass its checkpoint folder with "
    "`mktod serve --checkpoint runs/NAME/best`, or set MKTOD_PIPELINE=runs/NAME/best"
)


def pipeline_dir(settings: Settings) -> Path:
    """The checkpoint folder to serve: MKTOD_PIPELINE / --checkpoint, else the shipped default."""
    if settings.pipeline is None:
        folder = default_pipeline_dir()
        if not is_complete(folder):
            raise ConfigError(NO_PIPELINE.format(default=folder))
        return folder
    if not settings.pipeline.is_dir():
        raise ConfigError(f"{settings.pipeline}: no such checkpoint folder (MKTOD_PIPELINE / --checkpoint)")
    return settings.pipeline


def load_service_pipeline(
    settings: Settings, device: str = "cpu", environ: dict[str, str] | None = None
) -> Pipeline:
    """Load the pipeline the settings name; ``environ`` supplies OPENAI_API_KEY (default os.environ)."""
    folder = pipeline_dir(settings)
    generator = None
    if settings.generator == "openai":
        from mktod.generators.openai_chat import OpenAIChatGenerator, OpenAIConfig

        env = os.environ if environ is None else environ
        spec = load_spec(folder)
        meta_mode = cast(MetaMode, settings.openai_meta or spec.meta.mode)
        config = OpenAIConfig(
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            api_key=env.get("OPENAI_API_KEY") or None,
            max_tokens=settings.openai_max_tokens,
            meta=meta_mode,
        )
        generator = OpenAIChatGenerator(config, spec.meta)
    pipeline = load_pipeline(folder, device, generator=generator)
    if settings.k is not None:
        pipeline.config = replace(pipeline.config, k=settings.k)
    return pipeline
