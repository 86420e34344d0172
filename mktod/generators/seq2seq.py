"""Fusion-in-Decoder generator over any Hugging Face encoder-decoder (T5 by default), METHOD.md §5.

Each passage is the dialogue context (at most ``max_context_tokens``, cut from the left so the latest
turns survive) followed by ONE tagged record (at most ``max_record_tokens``). Passages are encoded
independently ([B*K, L]) and concatenated along the sequence for the decoder ([B, K*L]).

The encoder output of passage i is exactly what a forward pass on (context, record i) alone would compute,
so :meth:`Seq2SeqGenerator.joint_and_single_logprobs` gets both log p(r|c,E) and all K log p(r|c,e_i)
from one encoder call: MML costs one extra batched decoder call, not K extra full passes (§3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from mktod.errors import ConfigError
from mktod.generators.base import (
    GeneratorConfig,
    GeneratorInput,
    Likelihoods,
    RecordCuts,
    dropout_off,
    register_generator,
)
from mktod.generators.decoding import decoding_processors
from mktod.generators.text import CONTEXT_LABEL, RECORD_LABEL, format_context
from mktod.losses import sequence_logprob
from mktod.meta import SPECIAL_TOKENS, MetaConfig, MetaMode, TaggedRecord, render
from mktod.types import Utterance

IGNORE_INDEX = -100


@dataclass(frozen=True)
class _Encoded:
    """Encoder output of a batch of B turns, K slots each, passages of width L.

    hidden[B*K, L, d], attention[B*K, L]: one row per slot; slots without a passage (a turn with fewer
    than K records) are zero and fully masked. record_mask[B, K]: slot holds a record.
    no_entity_hidden[B', L, d], no_entity_attention[B', L]: context-only passages (B' = B or 0).
    """

    hidden: Tensor
    attention: Tensor
    record_mask: Tensor
    k: int
    no_entity_hidden: Tensor
    no_entity_attention: Tensor

    @property
    def joint_hidden(self) -> Tensor:
        """[B, K*L, d]: the turn's passages side by side, what the FiD decoder attends to."""
        n_turns = self.record_mask.shape[0]
        return self.hidden.reshape(n_turns, -1, self.hidden.shape[-1])

    @property
    def joint_attention(self) -> Tensor:
        return self.attention.reshape(self.record_mask.shape[0], -1)


def add_meta_tokens(tokenizer: Any, model: PreTrainedModel) -> int:
    """Add the meta-knowledge tags as unsplittable tokens; grow the embeddings only when needed.

    T5 checkpoints carry spare embedding rows (32128 rows for 32100 pieces), so the new ids usually fit;
    shrinking the matrix to ``len(tokenizer)`` would cut trained rows. Returns how many tokens were new.
    """
    added = int(tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True))
    rows = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer))
    return added


class Seq2SeqGenerator:
    """FiD generation and likelihoods; the device is where the model lives and where batches go."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        cfg: GeneratorConfig | None = None,
        meta_mode: MetaMode = "prefix",
        device: str | torch.device = "cpu",
    ) -> None:
        if not model.config.is_encoder_decoder:
            raise ValueError(f"{type(model).__name__} is not an encoder-decoder; FiD needs one")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad and an eos token")
        self.cfg = cfg if cfg is not None else GeneratorConfig()
        self.meta_mode: MetaMode = meta_mode
        self.device = torch.device(device)
        self.record_cuts = RecordCuts(self.cfg.max_record_tokens)
        self.tokenizer = tokenizer
        if meta_mode == "prefix":
            add_meta_tokens(tokenizer, model)
        self.model: nn.Module = model
        # HF's dynamic methods (get_encoder, generate, prepare_decoder_input_ids_from_labels) are loosely
        # typed upstream; one Any-typed handle keeps the casts in one place.
        self._hf: Any = cast(Any, model)
        self._hf.to(self.device)
        # Labels only ever appear in front of records and contexts, so tokenise them once.
        self._context_label = self._encode(CONTEXT_LABEL)
        self._record_label = self._encode(RECORD_LABEL)

    @classmethod
    def from_pretrained(
        cls, cfg: GeneratorConfig, meta_mode: MetaMode = "prefix", device: str | torch.device = "cpu"
    ) -> Seq2SeqGenerator:
        """Load ``cfg.model``: a hub name (``t5-base``) where the hub is reachable, else a local dir."""
        try:
            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
            model = AutoModelForSeq2SeqLM.from_pretrained(cfg.model)
        except OSError as err:
            # Hugging Face reads a missing folder as a malformed hub id; say which it was taken for.
            where = Path(cfg.model).resolve()
            # A hub id is NAME or OWNER/NAME: a longer or explicit path can only be a missing folder.
            path_like = cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") > 1
            why = "" if path_like else f", and no hub model of that name could be loaded ({err})"
            raise ConfigError(
                f"generator.model {cfg.model!r}: no model folder at {where}{why}; the offline "
                "backbones are built by `mktod build-backbone`"
            ) from None
        return cls(model, tokenizer, cfg, meta_mode, device)

    # ----------------------------------------------------------------------------------------- inputs

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _context_ids(self, context: Sequence[Utterance] | str) -> list[int]:
        budget = max(self.cfg.max_context_tokens - len(self._context_label), 0)
        ids = self._encode(format_context(context))
        return self._context_label + (ids[-budget:] if budget else [])

    def record_tokens(self, record: TaggedRecord) -> list[int]:
        """The record's part of a passage (label, meta knowledge, fields) before the budget cuts it."""
        return self._record_label + self._encode(render(record, self.meta_mode))

    def _passage(self, context_ids: list[int], record: TaggedRecord | None) -> list[int]:
        # record None: the context-only passage (a turn with no records, or the ctr loss's d⁻).
        ids = list(context_ids)
        if record is not None:
            ids += self.record_cuts.keep(self.record_tokens(record))
        return [*ids, self.tokenizer.eos_token_id]

    def _pad(self, seqs: Sequence[list[int]], value: int) -> Tensor:
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out.to(self.device)

    def passages(
        self, batch: Sequence[GeneratorInput], with_no_entity: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """Token ids [P, L] and attention mask [P, L] of the real passages, the record mask [B, K], and K.

        Passages are listed turn by turn, record by record (slot order); a turn with no records gets
        one context-only passage so the decoder always has something to read. With ``with_no_entity``,
        B context-only passages follow, one per turn.
        """
        if not batch:
            raise ValueError("empty batch")
        k = max(max(len(item.records), 1) for item in batch)
        seqs: list[list[int]] = []
        record_mask = torch.zeros(len(batch), k, dtype=torch.bool)
        contexts = [self._context_ids(item.context) for item in batch]
        for b, (item, ctx) in enumerate(zip(batch, contexts, strict=True)):
            if not item.records:
                seqs.append(self._passage(ctx, None))
            for i, record in enumerate(item.records):
                seqs.append(self._passage(ctx, record))
                record_mask[b, i] = True
        if with_no_entity:
            seqs += [self._passage(ctx, None) for ctx in contexts]
        ids = self._pad(seqs, int(self.tokenizer.pad_token_id))
        attention = self._pad([[1] * len(s) for s in seqs], 0)
        return ids, attention, record_mask.to(self.device), k

    def labels(self, responses: Sequence[str]) -> Tensor:
        """Target ids [B, T] (eos-terminated, at most ``max_target_tokens``), padding = -100."""
        cap = self.cfg.max_target_tokens
        seqs = [[*self._encode(r)[: cap - 1], self.tokenizer.eos_token_id] for r in responses]
        return self._pad(seqs, IGNORE_INDEX)

    # ---------------------------------------------------------------------------------------- forward

    def _encode_passages(self, batch: Sequence[GeneratorInput], with_no_entity: bool) -> _Encoded:
        """One encoder call over every passage, laid out for FiD (see :class:`_Encoded`)."""
        ids, attention, record_mask, k = self.passages(batch, with_no_entity)
        hidden = self._hf.get_encoder()(input_ids=ids, attention_mask=attention).last_hidden_state
        # A turn's slots: its records, or a single context-only passage when it has none.
        filled = record_mask.clone()
        filled[:, 0] |= ~record_mask.any(-1)
        slots = filled.view(-1).nonzero(as_tuple=True)[0]
        n_fid, n_slots = slots.numel(), record_mask.numel()
        fid_hidden = hidden.new_zeros(n_slots, *hidden.shape[1:]).index_copy(0, slots, hidden[:n_fid])
        fid_attention = attention.new_zeros(n_slots, attention.shape[1]).index_copy(
            0, slots, attention[:n_fid]
        )
        return _Encoded(fid_hidden, fid_attention, record_mask, k, hidden[n_fid:], attention[n_fid:])

    def _decode_logprob(self, hidden: Tensor, attention: Tensor, labels: Tensor) -> Tensor:
        """log p(labels | encoder output) for hidden[N, L, d], attention[N, L], labels[N, T] -> [N]."""
        decoder_input_ids = self._hf.prepare_decoder_input_ids_from_labels(labels=labels)
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=attention,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        )
        return sequence_logprob(out.logits, labels, IGNORE_INDEX)

    def joint_logprobs(self, batch: Sequence[GeneratorInput], responses: Sequence[str]) -> Tensor:
        """log p(r|c,E) [B] alone: what an NLL-only step (the "w/o MML" ablation) needs."""
        if len(batch) != len(responses):
            raise ValueError(f"{len(batch)} turns but {len(responses)} responses")
        enc = self._encode_passages(batch, False)
        return self._decode_logprob(enc.joint_hidden, enc.joint_attention, self.labels(responses))

    def joint_and_single_logprobs(
        self,
        batch: Sequence[GeneratorInput],
        responses: Sequence[str],
        with_no_entity: bool = False,
        single_dropout: bool = True,
    ) -> Likelihoods:
        """log p(r|c,E) [B] and log p(r|c,e_i) [B,K] with ONE encoder call and two decoder calls.

        The second decoder call has one row per real record (plus one per turn with ``with_no_entity``,
        for the ctr loss's log p(r|c)); it reads the passage encodings the joint call already has, so
        MML adds decoder work only. Gradients of both terms flow back through the one encoder pass.

        ``single_dropout`` False: the encoder call and the single-record decoder call run without
        dropout (each passage is encoded separately, so encoder dropout is noise of its own in every
        record's likelihood); the joint decoder call keeps it.
        """
        if len(batch) != len(responses):
            raise ValueError(f"{len(batch)} turns but {len(responses)} responses")
        with dropout_off(self.model, not single_dropout):
            enc = self._encode_passages(batch, with_no_entity)
        labels = self.labels(responses)
        joint = self._decode_logprob(enc.joint_hidden, enc.joint_attention, labels)

        # Passage i's encoder output is the whole encoder output of the one-record pass (same tokens,
        # padding masked), so the K single-record passes are one decoder call over the real records.
        rows = enc.record_mask.view(-1).nonzero(as_tuple=True)[0]
        hidden = torch.cat([enc.hidden[rows], enc.no_entity_hidden])
        attention = torch.cat([enc.attention[rows], enc.no_entity_attention])
        # The no-entity passages (if any) came out of the same encoder call, hence the same width.
        expanded = torch.cat([labels[rows // enc.k], labels] if with_no_entity else [labels[rows // enc.k]])
        with dropout_off(self.model, not single_dropout):
            logps = self._decode_logprob(hidden, attention, expanded)
        n_rows, n_turns = rows.numel(), len(batch)
        single = logps.new_zeros(n_turns * enc.k).index_copy(0, rows, logps[:n_rows]).view(n_turns, enc.k)
        no_entity = logps[n_rows:] if with_no_entity else None
        lengths = (labels != IGNORE_INDEX).sum(-1)
        return Likelihoods(joint, single, lengths, enc.record_mask, no_entity)

    # ------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        """Greedy (``num_beams`` = 1) or beam search, at most ``max_target_tokens`` new tokens."""
        was_training = self.model.training
        self.model.eval()
        try:
            enc = self._encode_passages(batch, False)
            out = self._hf.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=enc.joint_hidden),
                attention_mask=enc.joint_attention,
                max_new_tokens=self.cfg.max_target_tokens,
                num_beams=self.cfg.num_beams,
                do_sample=False,
                logits_processor=decoding_processors(self.cfg.no_repeat_ngram_size),
            )
        finally:
            self.model.train(was_training)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


@register_generator("seq2seq")
def _build(cfg: GeneratorConfig, meta: MetaConfig, device: torch.device) -> Seq2SeqGenerator:
    return Seq2SeqGenerator.from_pretrained(cfg, meta.mode, device)
