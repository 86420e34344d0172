"""How a turn becomes the token ids a decoder-only generator reads and scores (METHOD.md §5).

One turn is one chat-formatted prompt whose parts always come in this order::

    prefix   = chat-template head + instruction + "Dialogue:" + context + "Knowledge:"   (per turn)
    records  = one line per tagged record (prefix or prompt rendering of the meta knowledge)
    tail     = [restated last user message +] end of the user message + assistant header
    response = the system response + end-of-turn token                                   (the loss)

The tail is the same for every turn unless ``generator.restate_user`` repeats the user's last message
in it; either way it is the same for all of one turn's rows (joint, single-record and no-record).

Each part is tokenised on its own and the ids concatenated, so the prefix of a turn is the same token
sequence whether one or all K records follow it: the generator's prefix-cache likelihoods rely on it.
Kept apart from :mod:`mktod.generators.causal` (the forward passes) so the layout reads in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mktod.generators.base import GeneratorConfig, RecordCuts
from mktod.generators.prompts import PREFIX_TAG_EXPLANATION
from mktod.generators.text import format_context, last_user_message
from mktod.meta import MetaMode, TaggedRecord, render
from mktod.types import Utterance

INSTRUCTION = (
    "You are a task-oriented dialogue system. Answer the user's last message in one or two short "
    "sentences, using the knowledge records when they are relevant."
)
_SENTINEL = "\x00MKTOD-USER\x00"


@dataclass(frozen=True)
class TurnIds:
    """Token ids of one turn's parts (see the module docstring)."""

    prefix: list[int]
    records: list[list[int]]
    tail: list[int]
    response: list[int]


@dataclass(frozen=True)
class Rows:
    """A padded batch of rows: ids[N, L], attention[N, L], block ids[N, L] (see record_attention) and,
    per scored token, (row, position, id)."""

    ids: Tensor
    attention: Tensor
    blocks: Tensor
    score_rows: Tensor
    score_positions: Tensor
    score_targets: Tensor


def instruction_for(mode: MetaMode) -> str:
    """The instruction, plus what the tags mean in the prefix rendering (the prompt rendering's
    sentences explain themselves)."""
    return f"{INSTRUCTION}\n{PREFIX_TAG_EXPLANATION}" if mode == "prefix" else INSTRUCTION


def template_parts(tokenizer: Any, system: str) -> tuple[str, str]:
    """(head, tail) around the user message in the tokenizer's chat template, with the assistant header.

    Models without a template get a plain "instruction / message / Response:" layout.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": _SENTINEL}]
        text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        head, sep, tail = text.partition(_SENTINEL)
        if sep:
            return head, tail
    return f"{system}\n\n", "\nResponse: "


class CausalInputs:
    """The token layout of one tokenizer and meta-knowledge mode; builds turns and padded rows.

    Build it after the meta tokens are added to the tokenizer (prefix mode): the constant parts are
    tokenised once, here.
    """

    def __init__(
        self, tokenizer: Any, cfg: GeneratorConfig, meta_mode: MetaMode, device: torch.device
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs an eos (end-of-turn) token")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is always masked, any id will do
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.meta_mode: MetaMode = meta_mode
        self.device = device
        head, tail = template_parts(tokenizer, instruction_for(meta_mode))
        self.head = self.encode(head + "Dialogue:\n")
        self.knowledge = self.encode("\n\nKnowledge:\n")
        self.none = self.encode("(none)\n")
        self.tail = self.encode(tail)
        self.restated = self.encode("\n\nThe user's last message:\n")
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id)
        self.cuts = RecordCuts(cfg.max_record_tokens)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def latest(self, ids: list[int]) -> list[int]:
        """The last ``max_context_tokens`` of ``ids``: cut from the left, keeping what is nearest."""
        return ids[-self.cfg.max_context_tokens :] if self.cfg.max_context_tokens else []

    def context_ids(self, context: Sequence[Utterance] | str) -> list[int]:
        return self.latest(self.encode(format_context(context)))

    def tail_ids(self, context: Sequence[Utterance] | str) -> list[int]:
        """The chat template's tail, after the restated last user message with ``restate_user`` (cut
        like the context)."""
        if not self.cfg.restate_user:
            return self.tail
        return [*self.restated, *self.latest(self.encode(last_user_message(context))), *self.tail]

    def record_tokens(self, record: TaggedRecord) -> list[int]:
        """The rendered record (meta knowledge, then the fields) before the budget cuts it."""
        return self.encode(render(record, self.meta_mode))

    def record_ids(self, record: TaggedRecord) -> list[int]:
        return [*self.cuts.keep(self.record_tokens(record)), *self.encode("\n")]

    def turn(
        self, context: Sequence[Utterance] | str, records: Sequence[TaggedRecord], response: str
    ) -> TurnIds:
        prefix = [*self.head, *self.context_ids(context), *self.knowledge]
        target = [*self.encode(response)[: self.cfg.max_target_tokens - 1], self.eos]
        return TurnIds(prefix, [self.record_ids(r) for r in records], self.tail_ids(context), target)

    def sequence(self, turn: TurnIds) -> tuple[list[int], list[int]]:
        """Token ids of prefix + records + tail + response, and their block ids (record i: i, else 0)."""
        ids, blocks = list(turn.prefix), [0] * len(turn.prefix)
        for i, record in enumerate(turn.records, start=1):
            ids += record
            blocks += [i] * len(record)
        if not turn.records:
            ids += self.none
            blocks += [0] * len(self.none)
        ids += [*turn.tail, *turn.response]
        blocks += [0] * (len(turn.tail) + len(turn.response))
        return ids, blocks

    def rows(self, rows: Sequence[tuple[list[int], int]], blocks: Sequence[list[int]] | None = None) -> Rows:
        """Right-padded rows; each is (ids, n) where the last n ids are scored (the response)."""
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention = torch.zeros(len(rows), width, dtype=torch.long)
        block_ids = torch.zeros(len(rows), width, dtype=torch.long)
        where_rows: list[int] = []
        where_pos: list[int] = []
        targets: list[int] = []
        for i, (seq, n_scored) in enumerate(rows):
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[i, : len(seq)] = 1
            if blocks is not None:
                block_ids[i, : len(seq)] = torch.tensor(blocks[i], dtype=torch.long)
            # Token at position p is predicted by the hidden state at p - 1.
            for p in range(len(seq) - n_scored, len(seq)):
                where_rows.append(i)
                where_pos.append(p - 1)
                targets.append(seq[p])
        dev = self.device
        return Rows(
            ids.to(dev),
            attention.to(dev),
            block_ids.to(dev),
            torch.tensor(where_rows, dtype=torch.long, device=dev),
            torch.tensor(where_pos, dtype=torch.long, device=dev),
            torch.tensor(targets, dtype=torch.long, device=dev),
        )
