"""Decoder-only generator over any Hugging Face causal LM (SmolLM2-135M-Instruct offline), METHOD.md §5.

A turn's prompt is laid out by :mod:`mktod.generators.causal_inputs` as prefix (instruction + context),
records, tail and response, each tokenised on its own, so the prefix of a turn is the same token
sequence whether one or all K records follow it. :meth:`CausalGenerator.joint_and_single_logprobs` uses
that: the prefix goes through the model once, its key/value cache is expanded to the joint row and the K
single-record rows, and only ``records + tail + response`` is computed per row (issue #7, item 2).
Log-probabilities are taken at the response positions only: the 49k-way output layer is the costliest
matrix of a 135M model, and no other position is ever scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel

from mktod.generators.base import (
    GeneratorConfig,
    GeneratorInput,
    Likelihoods,
    RecordCuts,
    dropout_off,
    register_generator,
)
from mktod.generators.causal_inputs import CausalInputs, Rows, TurnIds
from mktod.generators.causal_models import resolve_causal_model
from mktod.generators.decoding import decoding_processors
from mktod.generators.kv_cache import cache_keyword, output_cache
from mktod.generators.record_attention import (
    RECORD_ATTENTION,
    as_model_mask,
    block_mask,
    continuation_mask,
    only_record,
)
from mktod.generators.reply import clean_reply
from mktod.generators.seq2seq import add_meta_tokens
from mktod.meta import SPECIAL_TOKENS, MetaConfig, MetaMode, TaggedRecord


class CausalGenerator:
    """Generation and likelihoods for a decoder-only LM; ``model`` may be a peft LoRA wrapper."""

    def __init__(
        self,
        model: PreTrainedModel | nn.Module,
        tokenizer: Any,
        cfg: GeneratorConfig | None = None,
        meta_mode: MetaMode = "prefix",
        device: str | torch.device = "cpu",
    ) -> None:
        self.cfg = cfg if cfg is not None else GeneratorConfig(kind="causal")
        self.meta_mode: MetaMode = meta_mode
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.model: nn.Module = model
        self._hf: Any = cast(Any, model)
        if meta_mode == "prefix":
            add_meta_tokens(tokenizer, self._hf)
        self._hf.to(self.device)
        self.inputs = CausalInputs(tokenizer, self.cfg, meta_mode, self.device)
        if self.cfg.record_attention not in RECORD_ATTENTION:
            raise ValueError(
                f"generator.record_attention must be one of {', '.join(RECORD_ATTENTION)}, "
                f"got {self.cfg.record_attention!r}"
            )
        self.parallel = self.cfg.record_attention == "parallel"
        # The keyword this transformers version takes a key/value cache under (kv_cache.py).
        self._cache_kw = cache_keyword(self._decoder())

    @property
    def record_cuts(self) -> RecordCuts:
        return self.inputs.cuts

    def record_tokens(self, record: TaggedRecord) -> list[int]:
        return self.inputs.record_tokens(record)

    @classmethod
    def from_pretrained(
        cls, cfg: GeneratorConfig, meta_mode: MetaMode = "prefix", device: str | torch.device = "cpu"
    ) -> CausalGenerator:
        """Load ``cfg.model`` (hub name, folder, folder with a GGUF file, or ``smollm2``), then
        ``cfg.adapter`` (a saved LoRA adapter) or a fresh LoRA of rank ``cfg.lora.r`` when r > 0."""
        folder, gguf = resolve_causal_model(cfg.model, cfg.gguf_file)
        # An adapter folder holds the tokenizer it was trained with (meta tokens included).
        tokenizer = (
            AutoTokenizer.from_pretrained(cfg.adapter)
            if cfg.adapter
            else AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        )
        model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        if meta_mode == "prefix":
            # The adapter was trained with the meta tokens in the vocabulary: add them before loading it.
            add_meta_tokens(tokenizer, model)
        if cfg.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, cfg.adapter, is_trainable=False)
        elif cfg.lora.r > 0:
            model = add_lora(model, tokenizer, cfg, meta_mode)
        return cls(model, tokenizer, cfg, meta_mode, device)

    @property
    def is_adapter(self) -> bool:
        """True when only a LoRA adapter is trained (and saved) on top of a frozen base model."""
        return hasattr(self._hf, "peft_config")

    # ----------------------------------------------------------------------------------------- inputs

    def turn(self, item: GeneratorInput, response: str = "") -> TurnIds:
        return self.inputs.turn(item.context, item.records, response)

    def prompt(self, item: GeneratorInput) -> list[int]:
        """The full prompt (everything before the response) of one turn with all its records."""
        ids, _ = self.sequence(self.turn(item))
        return ids[:-1]  # the empty response is its end-of-turn token alone

    def sequence(self, turn: TurnIds) -> tuple[list[int], list[int]]:
        """Token ids of prefix + records + tail + response, and their block ids (record i: i, else 0)."""
        return self.inputs.sequence(turn)

    # ---------------------------------------------------------------------------------------- forward

    def _score(self, hidden: Tensor, rows: Rows) -> Tensor:
        """Sum of log p(target) per row [N] from the decoder's last hidden states [N, L, d]."""
        picked = hidden[rows.score_rows, rows.score_positions]
        logits = self._hf.get_output_embeddings()(picked).float()
        token_logp = torch.log_softmax(logits, -1).gather(-1, rows.score_targets.unsqueeze(-1)).squeeze(-1)
        out = token_logp.new_zeros(rows.ids.shape[0])
        return out.index_add(0, rows.score_rows, token_logp)

    def _decoder(self) -> Any:
        return self._hf.get_decoder()

    def _mask(self, allowed: Tensor) -> Tensor:
        return as_model_mask(allowed, self._hf.config._attn_implementation, self._hf.dtype)

    def _joint_rows(self, turns: Sequence[TurnIds]) -> Rows:
        seqs = [self.sequence(t) for t in turns]
        return self.inputs.rows(
            [(ids, len(t.response)) for (ids, _), t in zip(seqs, turns, strict=True)], [b for _, b in seqs]
        )

    def _joint_forward(self, rows: Rows, use_cache: bool) -> Any:
        """The full sequences through the decoder; in the parallel layout, records hidden from each other."""
        mask = self._mask(block_mask(rows.attention, rows.blocks)) if self.parallel else rows.attention
        return self._decoder()(input_ids=rows.ids, attention_mask=mask, use_cache=use_cache)

    def joint_logprobs(self, batch: Sequence[GeneratorInput], responses: Sequence[str]) -> Tensor:
        """log p(r|c,E) [B] from one forward over the full sequences (the NLL-only step)."""
        if len(batch) != len(responses):
            raise ValueError(f"{len(batch)} turns but {len(responses)} responses")
        rows = self._joint_rows([self.turn(item, r) for item, r in zip(batch, responses, strict=True)])
        return self._score(self._joint_forward(rows, use_cache=False).last_hidden_state, rows)

    def _continue(self, prefix: Rows, kv: list[tuple[Tensor, Tensor]], which: Tensor, rows: Rows) -> Tensor:
        """Score ``rows`` as continuations of the prefixes ``which`` [N] (one prefix row per row)."""
        cache = DynamicCache(ddp_cache_data=[(k[which], v[which]) for k, v in kv], config=self._hf.config)
        prefix_len = prefix.attention[which].sum(-1, keepdim=True)
        positions = prefix_len + torch.arange(rows.ids.shape[1], device=self.device).unsqueeze(0)
        attention = torch.cat([prefix.attention[which], rows.attention], dim=1)
        out = self._decoder()(
            input_ids=rows.ids,
            attention_mask=attention,
            position_ids=positions,
            **{self._cache_kw: cache},
            use_cache=True,
        )
        return self._score(out.last_hidden_state, rows)

    def joint_and_single_logprobs(
        self,
        batch: Sequence[GeneratorInput],
        responses: Sequence[str],
        with_no_entity: bool = False,
        single_dropout: bool = True,
    ) -> Likelihoods:
        """log p(r|c,E) [B] and log p(r|c,e_i) [B,K] from one prefix pass and two continuation passes.

        The prefix (instruction + context) of each turn is computed once; its key/value cache is
        indexed out to the joint row and to every single-record row (plus a no-record row per turn with
        ``with_no_entity``). Gradients flow back through the one prefix pass.

        ``single_dropout`` False: the single-record continuation runs without dropout (the prefix's
        noise is shared by a turn's rows, so it stays); in the parallel layout, whose single rows read
        the records' keys and values from the joint pass, the whole computation runs without it.
        """
        if len(batch) != len(responses):
            raise ValueError(f"{len(batch)} turns but {len(responses)} responses")
        if not batch:
            raise ValueError("empty batch")
        turns = [self.turn(item, r) for item, r in zip(batch, responses, strict=True)]
        if self.parallel:
            with dropout_off(self.model, not single_dropout):
                return self._parallel_likelihoods(turns, with_no_entity)
        k = max(max(len(t.records), 1) for t in turns)
        prefix = self.inputs.rows([(t.prefix, 0) for t in turns])
        out = self._decoder()(input_ids=prefix.ids, attention_mask=prefix.attention, use_cache=True)
        cache = output_cache(out)
        kv = [(layer.keys, layer.values) for layer in cache.layers]

        # The joint row after the prefix: all records (or "(none)"), tail, response.
        joint_rows = self.inputs.rows(
            [(self.sequence(tr)[0][len(tr.prefix) :], len(tr.response)) for tr in turns]
        )
        joint = self._continue(prefix, kv, torch.arange(len(turns), device=self.device), joint_rows)

        record_mask, owners, rows = self._single_rows(turns, k, with_no_entity, with_records=True)
        logps = None
        if rows:
            with dropout_off(self.model, not single_dropout):
                logps = self._continue(
                    prefix, kv, torch.tensor(owners, device=self.device), self.inputs.rows(rows)
                )
        return self._likelihoods(turns, joint, logps, record_mask, with_no_entity)

    def _single_rows(
        self, turns: Sequence[TurnIds], k: int, with_no_entity: bool, with_records: bool
    ) -> tuple[Tensor, list[int], list[tuple[list[int], int]]]:
        """The one-record rows after a turn's prefix: record slots [B, K], each row's turn and (ids, n).

        Rows are record + tail + response (``with_records``; the parallel layout reuses the records'
        keys and values and sends tail + response only), then one "(none)" row per turn for the ctr loss.
        """
        record_mask = torch.zeros(len(turns), k, dtype=torch.bool)
        owners: list[int] = []
        rows: list[tuple[list[int], int]] = []
        for b, tr in enumerate(turns):
            for i, rec in enumerate(tr.records):
                record_mask[b, i] = True
                owners.append(b)
                rows.append(([*(rec if with_records else []), *tr.tail, *tr.response], len(tr.response)))
        if with_no_entity:
            for b, tr in enumerate(turns):
                owners.append(b)
                rows.append(([*self.inputs.none, *tr.tail, *tr.response], len(tr.response)))
        return record_mask, owners, rows

    def _likelihoods(
        self,
        turns: Sequence[TurnIds],
        joint: Tensor,
        logps: Tensor | None,
        record_mask: Tensor,
        with_no_entity: bool,
    ) -> Likelihoods:
        """Pack the one-record log-likelihoods (records first, then no-record rows) into Likelihoods."""
        k = record_mask.shape[1]
        single = joint.new_zeros(len(turns) * k)
        no_entity = None
        if logps is not None:
            slots = record_mask.view(-1).nonzero(as_tuple=True)[0].to(self.device)
            single = single.index_copy(0, slots, logps[: slots.numel()])
            no_entity = logps[slots.numel() :] if with_no_entity else None
        lengths = torch.tensor([len(t.response) for t in turns], device=self.device)
        return Likelihoods(joint, single.view(len(turns), k), lengths, record_mask.to(self.device), no_entity)

    def _parallel_likelihoods(self, turns: Sequence[TurnIds], with_no_entity: bool) -> Likelihoods:
        """The parallel layout: ONE pass over the joint rows, then the one-record rows (tail + response)
        reading the cached prefix and record i only, at the positions they have in the joint row."""
        k = max(max(len(t.records), 1) for t in turns)
        joint_rows = self._joint_rows(turns)
        out = self._joint_forward(joint_rows, use_cache=True)
        joint = self._score(out.last_hidden_state, joint_rows)
        record_mask, owners, rows = self._single_rows(turns, k, with_no_entity, with_records=False)
        if not rows:
            return self._likelihoods(turns, joint, None, record_mask, with_no_entity)
        which = torch.tensor(owners, device=self.device)
        # Row r reads record i of its turn (or, for a no-record row, the prefix alone).
        records = [i + 1 for b, tr in enumerate(turns) for i in range(len(tr.records))]
        prefix_len = [len(tr.prefix) for tr in turns]
        tail_at = [len(tr.prefix) + sum(len(r) for r in tr.records) for tr in turns]
        records += [-1] * (len(rows) - len(records))
        ends = [tail_at[b] if rec > 0 else prefix_len[b] for b, rec in zip(owners, records, strict=True)]
        single_rows = self.inputs.rows(rows)
        visible = only_record(
            joint_rows.blocks[which],
            joint_rows.attention[which],
            torch.tensor(records, device=self.device),
            torch.tensor(ends, device=self.device),
        )
        kv = [(layer.keys, layer.values) for layer in output_cache(out).layers]
        cache = DynamicCache(ddp_cache_data=[(key[which], v[which]) for key, v in kv], config=self._hf.config)
        start = torch.tensor(ends, device=self.device).unsqueeze(1)
        positions = start + torch.arange(single_rows.ids.shape[1], device=self.device).unsqueeze(0)
        hidden = self._decoder()(
            input_ids=single_rows.ids,
            attention_mask=self._mask(continuation_mask(visible, single_rows.attention)),
            position_ids=positions,
            **{self._cache_kw: cache},
            use_cache=True,
        ).last_hidden_state
        return self._likelihoods(turns, joint, self._score(hidden, single_rows), record_mask, with_no_entity)

    # ------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        """Greedy (``num_beams`` = 1) or beam search over left-padded prompts."""
        seqs = [self.sequence(self.turn(item)) for item in batch]
        prompts = [(ids[:-1], blocks[:-1]) for ids, blocks in seqs]  # without the empty response's eos
        width = max(len(ids) for ids, _ in prompts)
        pad = self.inputs.pad
        ids = torch.tensor([[pad] * (width - len(p)) + p for p, _ in prompts], device=self.device)
        attention = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p, _ in prompts], device=self.device
        )
        blocks = torch.tensor([[0] * (width - len(p)) + b for p, b in prompts], device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            extra: dict[str, Any] = {}
            if self.parallel:
                cache = self._prefill(ids, attention, blocks)
                # generate expands input_ids and the mask for beam search but not a cache passed in.
                if self.cfg.num_beams > 1:
                    cache.batch_repeat_interleave(self.cfg.num_beams)
                extra[self._cache_kw] = cache
            out = self._hf.generate(
                input_ids=ids,
                attention_mask=attention,
                max_new_tokens=self.cfg.max_target_tokens,
                num_beams=self.cfg.num_beams,
                do_sample=False,
                eos_token_id=self.inputs.eos,
                pad_token_id=pad,
                # The response alone: the prompt's records hold phrases the answer must repeat.
                logits_processor=decoding_processors(self.cfg.no_repeat_ngram_size, start=width),
                **extra,
            )
        finally:
            self.model.train(was_training)
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [clean_reply(t, inline=True) for t in texts]

    def _prefill(self, ids: Tensor, attention: Tensor, blocks: Tensor) -> Any:
        """The key/value cache of all prompt tokens but the last, computed with the parallel layout's
        mask; ``generate`` then runs the last prompt token (which sees every record) and decodes on."""
        head = attention[:, :-1]
        positions = (head.cumsum(-1) - 1).clamp(min=0)
        out = self._decoder()(
            input_ids=ids[:, :-1],
            attention_mask=self._mask(block_mask(head, blocks[:, :-1])),
            position_ids=positions,
            use_cache=True,
        )
        return output_cache(out)

    # ------------------------------------------------------------------------------------------ saving

    def save(self, directory: Path) -> None:
        """The trained weights and the tokenizer: the whole model, or only the LoRA adapter.

        An adapter never includes the (resized) embedding matrix: the meta tokens' trained rows are
        saved as peft trainable-token values, which replace the rows on load, so the adapter of
        SmolLM2-135M stays a few MB instead of the 113 MB embedding matrix.
        """
        if self.is_adapter:
            # Name the base as configured ("smollm2", a hub id), not the local cache folder it loaded from.
            for adapter_config in self._hf.peft_config.values():
                adapter_config.base_model_name_or_path = self.cfg.model
            self._hf.save_pretrained(directory, save_embedding_layers=False)
        else:
            self._hf.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def load_adapter_weights(self, directory: Path) -> None:
        """Load a saved adapter's weights into this generator's (trainable) adapter, to resume."""
        from peft import load_peft_weights, set_peft_model_state_dict

        if not self.is_adapter:
            raise ValueError("this generator has no LoRA adapter to load weights into")
        set_peft_model_state_dict(self._hf, load_peft_weights(str(directory), device=str(self.device)))


def add_lora(model: Any, tokenizer: Any, cfg: GeneratorConfig, meta_mode: MetaMode) -> Any:
    """Wrap ``model`` in a fresh LoRA adapter; in prefix mode the meta tokens' embedding rows train too."""
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    targets: str | list[str] = (
        lora.target_modules if lora.target_modules == "all-linear" else lora.target_modules.split(",")
    )
    extra: dict[str, Any] = {}
    if meta_mode == "prefix":
        # Only the new rows train and are saved (a few KB), not the whole 49k x d matrix.
        new_ids = [int(i) for i in tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))]
        extra["trainable_token_indices"] = new_ids
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        **extra,
    )
    return get_peft_model(model, config)


@register_generator("causal")
def _build(cfg: GeneratorConfig, meta: MetaConfig, device: torch.device) -> CausalGenerator:
    return CausalGenerator.from_pretrained(cfg, meta.mode, device)
