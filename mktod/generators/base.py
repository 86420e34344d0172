"""What every generator offers, and a registry that builds one from config (METHOD.md §5).

A generator turns (dialogue context, tagged records) into a system response. Generators that can be
trained also return the log-likelihoods the losses need: the joint log p(r|c,E) (the NLL term) and the
per-record log p(r|c,e_i) (the MML term), see :mod:`mktod.losses`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mktod.meta import MetaConfig, TaggedRecord
from mktod.types import Utterance


@dataclass(frozen=True)
class LoraSettings:
    """A LoRA adapter on the generator (causal kind): rank 0 means full fine-tuning."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.05
    # "all-linear", or comma-separated module names such as "q_proj,v_proj".
    target_modules: str = "all-linear"


@dataclass(frozen=True)
class GeneratorConfig:
    """``kind`` picks the registered backend (seq2seq, causal, openai); ``model`` is a hub name or a
    local directory (for causal also a GGUF file, or ``smollm2`` for the offline default)."""

    kind: str = "seq2seq"
    model: str = "t5-base"
    gguf_file: str = ""  # a GGUF file inside the ``model`` folder (causal)
    adapter: str = ""  # a trained LoRA adapter folder loaded on top of ``model`` (causal)
    lora: LoraSettings = field(default_factory=LoraSettings)
    # causal: records attend to each other (a plain prompt); parallel: each record attends to the
    # context and itself only, so MML reuses the records' keys/values (mktod.generators.record_attention).
    record_attention: str = "causal"
    # causal kind: repeat the user's last message after the records, just before the answer. Without
    # it that message lies a whole knowledge block (~300 tokens on SMD) back, and SmolLM2 runs trained
    # past 120 SMD turns stopped reading it and closed first turns with "you are welcome"
    # (bench/results/reply_modes_smd.md; bench/results/quality.md, "restated message").
    restate_user: bool = False
    max_context_tokens: int = 200
    max_record_tokens: int = 100
    # Both the generation limit and the training-target truncation: 64, or 128 for SMD.
    max_target_tokens: int = 64
    num_beams: int = 1
    # 0: plain greedy (or beam) decoding, as in the paper. n > 0: a response never repeats one of its own
    # n-grams, which stops the loops a small or briefly trained model falls into (mktod.generators.decoding).
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be 0 (off) or more, got {self.no_repeat_ngram_size}")


@dataclass
class RecordCuts:
    """How often a generator cut a rendered record (meta knowledge, then the fields) at its budget of
    ``cap`` tokens. A cut record loses its last fields, which the generator can then never copy into a
    reply, so a budget that cuts is a quiet loss of Entity F1: training warns and evaluation reports it."""

    cap: int
    seen: int = 0
    cut: int = 0
    longest: int = 0  # tokens of the longest record rendered, before the cut

    def keep(self, ids: list[int]) -> list[int]:
        """``ids`` cut to the budget, counted."""
        self.seen += 1
        self.longest = max(self.longest, len(ids))
        if len(ids) <= self.cap:
            return ids
        self.cut += 1
        return ids[: self.cap]

    @property
    def share(self) -> float:
        """Percent of the records rendered so far that were cut."""
        return 100.0 * self.cut / self.seen if self.seen else 0.0

    def summary(self) -> dict[str, float | int]:
        """What an evaluation reports: percent cut, the longest record and the budget, in tokens."""
        return {
            "records_cut": round(self.share, 2),
            "longest_record_tokens": self.longest,
            "max_record_tokens": self.cap,
        }

    def warning(self) -> str | None:
        if not self.cut:
            return None
        return (
            f"generator.max_record_tokens = {self.cap} cut {self.share:.0f}% of the {self.seen} records "
            f"rendered so far (the longest is {self.longest} tokens with its meta knowledge): their last "
            f"fields never reach the generator; set it to at least {self.longest} to keep them"
        )


def record_cuts(generator: object) -> RecordCuts | None:
    """The record-budget counter of a generator that cuts records (seq2seq, causal); None for one that
    sends them whole (a chat LLM)."""
    cuts = getattr(generator, "record_cuts", None)
    return cuts if isinstance(cuts, RecordCuts) else None


@dataclass(frozen=True)
class GeneratorInput:
    """One turn to answer: the context (most recent utterance last) and its tagged records, by rank."""

    context: Sequence[Utterance] | str
    records: tuple[TaggedRecord, ...]


@dataclass(frozen=True)
class Likelihoods:
    """Log-likelihoods of the gold responses of a batch of B turns with up to K records each.

    joint[B]: log p(r|c,E), all records at once. single[B,K]: log p(r|c,e_i), one record at a time
    (0 where ``mask`` is False). lengths[B]: response length in target tokens. mask[B,K]: real records.
    no_entity[B]: log p(r|c) with no record, when asked for (the ctr loss), else None.
    """

    joint: Tensor
    single: Tensor
    lengths: Tensor
    mask: Tensor
    no_entity: Tensor | None = None


@runtime_checkable
class Generator(Protocol):
    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        """One response per turn of ``batch``."""
        ...


@runtime_checkable
class TrainableGenerator(Generator, Protocol):
    model: nn.Module

    def joint_logprobs(self, batch: Sequence[GeneratorInput], responses: Sequence[str]) -> Tensor:
        """Differentiable log p(r|c,E) [B] of ``responses`` (one per turn), all records at once."""
        ...

    def joint_and_single_logprobs(
        self,
        batch: Sequence[GeneratorInput],
        responses: Sequence[str],
        with_no_entity: bool = False,
        single_dropout: bool = True,
    ) -> Likelihoods:
        """Differentiable log-likelihoods of ``responses`` (one per turn), see :class:`Likelihoods`.

        ``single_dropout`` False: the single-record (and no-record) likelihoods are computed without
        dropout, and so is any pass they share with the joint one (see ``loss.mml_dropout``).
        """
        ...


@contextmanager
def dropout_off(model: nn.Module, off: bool = True) -> Iterator[None]:
    """``model`` in eval mode inside the block (every dropout an identity), gradients kept; ``off``
    False: unchanged. Restores the mode it found.

    Why: each record's likelihood computed in train mode carries its own dropout noise. With a
    sequence log-likelihood that noise is several nats, larger than the records' real differences,
    and MML then pulls the retriever toward whichever record the noise favoured.
    """
    was = model.training
    if off:
        model.eval()
    try:
        yield
    finally:
        model.train(was)


GeneratorFactory = Callable[[GeneratorConfig, MetaConfig, torch.device], Generator]

GENERATORS: dict[str, GeneratorFactory] = {}

# Backends register themselves on import; importing lazily keeps e.g. the OpenAI client from needing torch
# models loaded, and vice versa.
_BUILTIN_MODULES = {
    "seq2seq": "mktod.generators.seq2seq",
    "causal": "mktod.generators.causal",
    "openai": "mktod.generators.openai_chat",
}


def register_generator(kind: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    def deco(factory: GeneratorFactory) -> GeneratorFactory:
        GENERATORS[kind] = factory
        return factory

    return deco


def build_generator(
    cfg: GeneratorConfig, meta: MetaConfig | None = None, device: str | torch.device = "cpu"
) -> Generator:
    """Build the generator ``cfg.kind``; ``meta.mode`` decides how the records' tags are rendered."""
    if cfg.kind not in GENERATORS and cfg.kind in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[cfg.kind])
    factory = GENERATORS.get(cfg.kind)
    if factory is None:
        known = sorted(set(GENERATORS) | set(_BUILTIN_MODULES))
        raise ValueError(f"unknown generator kind {cfg.kind!r}; known: {', '.join(known)}")
    return factory(cfg, meta if meta is not None else MetaConfig(), torch.device(device))
