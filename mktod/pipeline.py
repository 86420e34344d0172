"""The one way through the system: dialogue -> retriever -> meta knowledge -> generator -> reply.

Evaluation, the service and the chat commands all call :class:`Pipeline`; training reuses the same
retriever, meta-knowledge and generator objects rather than a copy of this flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mktod.encoder import format_context
from mktod.generators.base import Generator, GeneratorInput
from mktod.meta import MetaConfig
from mktod.retriever import RetrieverProtocol
from mktod.types import KB, Reply, Utterance

KBSetting = Literal["condensed", "large"]


@dataclass(frozen=True)
class PipelineConfig:
    """How many records the generator sees (METHOD.md §2: condensed 6/6/8, large-scale 7)."""

    k: int = 7
    setting: KBSetting = "condensed"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class Pipeline:
    def __init__(
        self,
        retriever: RetrieverProtocol,
        generator: Generator,
        meta: MetaConfig,
        config: PipelineConfig | None = None,
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.meta = meta
        self.config = config or PipelineConfig()

    def respond(self, context: Sequence[Utterance], kb: KB) -> Reply:
        """Answer the last user utterance of ``context`` from ``kb``."""
        return self.respond_many([context], [kb])[0]

    def respond_many(self, contexts: Sequence[Sequence[Utterance]], kbs: Sequence[KB]) -> list[Reply]:
        """``respond`` for many turns, retrieved and generated in batches of ``config.batch_size``."""
        if len(contexts) != len(kbs):
            raise ValueError(f"{len(contexts)} contexts but {len(kbs)} KBs")
        replies: list[Reply] = []
        step = self.config.batch_size
        for start in range(0, len(contexts), step):
            ctx = contexts[start : start + step]
            hits = self.retriever.retrieve_many(
                [format_context(c) for c in ctx], kbs[start : start + step], self.config.k
            )
            # No easy negative here: it is a training device only (METHOD.md §4).
            tagged = [self.meta.tag(h, c) for h, c in zip(hits, ctx, strict=True)]
            texts = self.generator.generate(
                [GeneratorInput(context=c, records=t) for c, t in zip(ctx, tagged, strict=True)]
            )
            replies.extend(Reply(text, t) for text, t in zip(texts, tagged, strict=True))
        return replies
