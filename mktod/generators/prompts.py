"""Chat-LLM prompts with meta knowledge (METHOD.md §4, "for chat LLMs"), and in-context demonstrations.

Message layout of one request (OpenAI chat format)::

    system     TASK_INSTRUCTION
               + the tag explanation of the meta mode (none for "none")
               + "Examples:" and k demonstrations, each a text block:
                   Example i
                   Knowledge:
                   1. <record rendered in the meta mode>
                   ...
                   Dialogue:
                   User: ...
                   System: ...
                   User: ...
                   System: <the gold response of that training turn>
    user       u_1                      \
    assistant  r_1                       } the dialogue context, one message per utterance
    ...                                 /
    user       Knowledge:               <- the last user message carries the retrieved records
               1. <record>
               ...

               User: u_t

The records of both the demonstrations and the turn are rendered by :func:`render_record`:
``none`` = the plain linearised record (the plain-ChatGPT baseline), ``prefix`` = the special-token
form ``<new-entity> <high-confidence> <1th-entity> name ...`` (:func:`mktod.meta.render_prefix`),
``prompt`` = the record followed by the chat-LLM sentences "It has high possibility that this entity
is top-1 important. This is a new entity." (:func:`mktod.meta.render_llm_sentences`).

Demonstrations sit in the system message rather than as extra user/assistant pairs so that the model
never mistakes a demonstration's turns for earlier turns of the dialogue it is answering. They are
chosen per turn from a training split by context similarity (:class:`DemonstrationPool`): the dense
retriever's context encoder when one is given, else BM25.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from rank_bm25 import BM25Okapi

from mktod.errors import ConfigError
from mktod.kb import linearise, value_text
from mktod.meta import LLM_TAG_EXPLANATION, MetaConfig, MetaMode, render_llm_sentences, render_prefix
from mktod.types import KB, Split, TaggedRecord, Utterance

if TYPE_CHECKING:
    from mktod.encoder import DenseEncoder
    from mktod.retriever import RetrieverProtocol

_WORD = re.compile(r"[a-z0-9]+")

Message = dict[str, str]

TASK_INSTRUCTION = (
    "You are the system in a task-oriented dialogue: you help a user find and book restaurants, hotels "
    "and attractions, navigate to points of interest, check the weather and manage a calendar. "
    "Each user message comes with entities retrieved from a knowledge base. Answer the user's last "
    "message with one short system response, using only facts from the knowledge base entities; "
    "ask a question when the request is ambiguous. Reply with the response text only."
)

# What the prefix tags mean, for a model that has never been trained on them (METHOD.md §4).
PREFIX_TAG_EXPLANATION = (
    "Each knowledge-base entity below is preceded by three tags of meta knowledge. "
    "<old-entity> means the entity was already mentioned in the dialogue, <new-entity> that it was not. "
    "<high-confidence>, <mid-confidence> and <low-confidence> say how confident the retriever is that "
    "the entity is the one the user needs. <1th-entity> to <5th-entity> give the retriever's ranking "
    "(<1th-entity> is the most likely); <other-entity> marks entities ranked below the top 5."
)

TAG_EXPLANATIONS: dict[str, str] = {
    "none": "",
    "prefix": PREFIX_TAG_EXPLANATION,
    "prompt": LLM_TAG_EXPLANATION,
}


def render_record(tagged: TaggedRecord, mode: MetaMode) -> str:
    """One record as the chat LLM reads it in meta mode ``mode``."""
    if mode == "prompt":
        return render_llm_sentences(tagged)
    if mode == "prefix":
        return render_prefix(tagged)
    if mode == "none":
        return linearise(tagged.record)
    raise ConfigError(f"unknown meta mode {mode!r} for the chat generator; use none, prefix or prompt")


def knowledge_block(records: Sequence[TaggedRecord], mode: MetaMode) -> str:
    """``Knowledge:`` then one numbered line per record, best-ranked first."""
    if not records:
        return "Knowledge:\n(no entities)"
    lines = [f"{i}. {render_record(r, mode)}" for i, r in enumerate(records, start=1)]
    return "Knowledge:\n" + "\n".join(lines)


def spoken(text: str) -> str:
    """Dataset text as a model should read it: ``_``-joined values become words."""
    return value_text(text)


@dataclass(frozen=True)
class Demonstration:
    """One in-context example: a training turn's context, its tagged records and its gold response."""

    context: tuple[Utterance, ...]
    records: tuple[TaggedRecord, ...]
    response: str
    source: str  # e.g. "smd train dialogue 12 turn 3", to audit where an example came from


def render_demonstration(demo: Demonstration, mode: MetaMode, number: int) -> str:
    dialogue = [f"{'User' if u.speaker == 'user' else 'System'}: {spoken(u.text)}" for u in demo.context]
    return "\n".join(
        [
            f"Example {number}",
            knowledge_block(demo.records, mode),
            "Dialogue:",
            *dialogue,
            f"System: {spoken(demo.response)}",
        ]
    )


def system_prompt(mode: MetaMode, demonstrations: Sequence[Demonstration] = ()) -> str:
    parts = [TASK_INSTRUCTION]
    explanation = TAG_EXPLANATIONS.get(mode)
    if explanation is None:
        raise ConfigError(f"unknown meta mode {mode!r} for the chat generator; use none, prefix or prompt")
    if explanation:
        parts.append(explanation)
    if demonstrations:
        examples = [render_demonstration(d, mode, i) for i, d in enumerate(demonstrations, start=1)]
        parts.append("Examples:\n\n" + "\n\n".join(examples))
    return "\n\n".join(parts)


def build_messages(
    context: Sequence[Utterance] | str,
    records: Sequence[TaggedRecord],
    mode: MetaMode,
    demonstrations: Sequence[Demonstration] = (),
) -> list[Message]:
    """The chat messages of one turn, laid out as in the module docstring."""
    utterances = (Utterance("user", context),) if isinstance(context, str) else tuple(context)
    messages: list[Message] = [{"role": "system", "content": system_prompt(mode, demonstrations)}]
    for u in utterances[:-1]:
        messages.append({"role": "user" if u.speaker == "user" else "assistant", "content": spoken(u.text)})
    knowledge = knowledge_block(records, mode)
    last = utterances[-1] if utterances else None
    if last is not None and last.speaker == "user":
        messages.append({"role": "user", "content": f"{knowledge}\n\nUser: {spoken(last.text)}"})
    else:
        # A context ending on a system utterance (or empty) still needs the knowledge in a user turn.
        if last is not None:
            messages.append({"role": "assistant", "content": spoken(last.text)})
        messages.append({"role": "user", "content": knowledge})
    return messages


# ------------------------------------------------------------------------------------- demonstrations


class DemonstrationPool:
    """Training turns to draw in-context demonstrations from, by similarity to the turn being answered.

    Each pool turn's records are retrieved (with ``retriever``, ``k_records`` of them, from its
    dialogue's own KB or ``global_kb`` in the large-scale setting) and tagged lazily, only when the turn
    is chosen. Similarity compares the last ``window`` utterances of the contexts: cosine of the dense
    ``encoder``'s context embeddings when given, else BM25 over their words.
    """

    def __init__(
        self,
        split: Split,
        retriever: RetrieverProtocol,
        meta: MetaConfig,
        k_records: int = 7,
        *,
        global_kb: KB | None = None,
        encoder: DenseEncoder | None = None,
        window: int = 3,
        context_utterances: int = 3,
        batch_size: int = 64,
    ) -> None:
        if k_records < 1 or window < 1 or context_utterances < 1:
            raise ValueError("k_records, window and context_utterances must all be >= 1")
        self.dataset = split.dataset
        self.split = split.split
        self._turns = [(d, t) for d, t, _ in split.iter_turns()]
        if not self._turns:
            raise ConfigError(f"{split.dataset} {split.split} has no turns to draw demonstrations from")
        self._dialogue_ids = frozenset(d.id for d, _ in self._turns)
        self.retriever = retriever
        self.meta = meta
        self.k_records = k_records
        self.global_kb = global_kb
        self.window = window
        self.context_utterances = context_utterances
        self._encoder = encoder
        self._batch_size = batch_size
        texts = [self._query_text(d.context(t)) for d, t in self._turns]
        self._bm25: BM25Okapi | None = None
        self._vectors: npt.NDArray[np.float32] | None = None
        if encoder is not None:
            self._vectors = encoder.embed_contexts(texts, batch_size)
        else:
            # BM25Okapi divides by the mean document length; a pool of empty texts would divide by 0.
            self._bm25 = BM25Okapi([_WORD.findall(text) or ["<empty>"] for text in texts])
        self._lock = threading.Lock()
        self._built: dict[int, Demonstration] = {}

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def similarity(self) -> str:
        return "dense" if self._encoder is not None else "bm25"

    def check_disjoint(self, evaluated: Split) -> None:
        """Demonstrations must never come from the split being evaluated: ConfigError if they could."""
        shared = self._dialogue_ids & {d.id for d in evaluated.dialogues}
        if (evaluated.dataset, evaluated.split) == (self.dataset, self.split) or shared:
            raise ConfigError(
                f"demonstrations are drawn from {self.dataset} {self.split}, which overlaps the evaluated "
                f"{evaluated.dataset} {evaluated.split} ({len(shared)} shared dialogues); build the pool "
                "from the training split"
            )

    def select(self, context: Sequence[Utterance] | str, n: int) -> tuple[Demonstration, ...]:
        return self.select_many([context], n)[0]

    def select_many(
        self, contexts: Sequence[Sequence[Utterance] | str], n: int
    ) -> list[tuple[Demonstration, ...]]:
        """The ``n`` most similar pool turns for each context, most similar first (ties: pool order)."""
        if n <= 0 or not contexts:
            return [() for _ in contexts]
        queries = [self._query_text(c) for c in contexts]
        if self._vectors is not None and self._encoder is not None:
            q = self._encoder.embed_contexts(queries, self._batch_size)
            scores = q @ self._vectors.T
        else:
            assert self._bm25 is not None
            bm25 = self._bm25
            scores = np.stack([bm25.get_scores(_WORD.findall(text)) for text in queries])
        out = []
        for row in np.asarray(scores, dtype=np.float64):
            best = np.argsort(-row, kind="stable")[:n]
            out.append(tuple(self._demonstration(int(i)) for i in best))
        return out

    def _query_text(self, context: Sequence[Utterance] | str) -> str:
        if isinstance(context, str):
            return value_text(context)
        window = tuple(context)[-self.window :]
        if self._encoder is not None:
            from mktod.encoder import format_context  # already loaded: the encoder came from there

            return format_context(window)
        # BM25 compares words; speaker markers would only add a term every context shares.
        return " ".join(value_text(u.text) for u in window)

    def _demonstration(self, index: int) -> Demonstration:
        with self._lock:
            demo = self._built.get(index)
            if demo is None:
                demo = self._build(index)
                self._built[index] = demo
            return demo

    def _build(self, index: int) -> Demonstration:
        # Imported here: mktod.encoder loads transformers, which a pool-less generator never needs.
        from mktod.encoder import format_context

        dialogue, t = self._turns[index]
        context = dialogue.context(t)
        kb = self.global_kb if self.global_kb is not None else dialogue.kb
        hits = self.retriever.retrieve(format_context(context), kb, self.k_records) if len(kb) else ()
        return Demonstration(
            context=context[-self.context_utterances :],
            records=self.meta.tag(hits, context),
            response=dialogue.turns[t].response,
            source=f"{self.dataset} {self.split} dialogue {dialogue.id} turn {t}",
        )
