"""Generator backbones built offline, for machines without the model hub (METHOD.md §5).

The paper fine-tunes pre-trained T5-Base. Without hub access two stand-ins are built locally and saved as
ordinary Hugging Face model folders, usable as ``generator.model: PATH``:

- :func:`build_t5_from_scratch`: a SentencePiece-style tokenizer (BPE by default, or unigram) trained
  on the dataset's own text and a randomly initialised T5. It learns the task from the training
  dialogues alone, so expect numbers nearer the no-pre-training systems of METHOD.md §7 (CDNet, FG2Seq)
  than T5-Base.
- :func:`build_bert2bert`: an encoder-decoder warm-started from a BERT-style encoder (the bundled
  all-MiniLM-L6-v2) on both sides, the decoder given cross-attention (Rothe et al., 2020). Pre-trained
  but small (6 layers, d = 384). Its cross-attention is new: initialised as a copy of the same layer's
  self-attention (``self``, the default, see :func:`copy_self_attention`) or at random (``random``, as
  in Rothe et al.). On CamRest the copy scored 9.95 / 10.16 test Entity F1 / BLEU against random's
  6.18 / 6.12 after the same 400-step CPU run (bench/results/quality.md, pairing "cross-attention
  initialisation"), and its generator reads its input where random's hardly does (context_use.md).

Both folders already hold the meta-knowledge tokens (``<1th-entity>`` …) in their vocabulary, so the
generator never has to grow the embeddings (which ``EncoderDecoderModel`` refuses to do).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mktod.datasets import DataPaths, get_loader
from mktod.generators.text import CONTEXT_LABEL, RECORD_LABEL, format_context
from mktod.kb import linearise, value_text
from mktod.meta import (
    CONFIDENCE_TAGS,
    COOCCURRENCE_TAGS,
    SPECIAL_TOKENS,
    TaggedRecord,
    render_prompt,
    tagged_as,
)
from mktod.types import Record

T5Size = Literal["tiny", "small"]
CrossInit = Literal["random", "self"]
CROSS_INITS: tuple[CrossInit, ...] = ("random", "self")

# "small" is the published T5-Small shape; "tiny" fits a CPU smoke run (about 2M parameters + embeddings).
_T5_SHAPES: dict[str, dict[str, int]] = {
    "small": {"d_model": 512, "d_ff": 2048, "d_kv": 64, "num_layers": 6, "num_heads": 8},
    "tiny": {"d_model": 128, "d_ff": 512, "d_kv": 32, "num_layers": 2, "num_heads": 4},
}
# T5's own layout: pad 0, eos 1, unk 2 (the decoder starts from pad).
_T5_SPECIALS = ("<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class Backbone:
    """What was built: the folder to put in ``generator.model``, and its size."""

    path: Path
    kind: str
    parameters: int
    vocab_size: int


TokenizerTexts = Literal["inputs", "dialogues"]
TokenizerModel = Literal["bpe", "unigram"]
TOKENIZER_MODELS: tuple[TokenizerModel, ...] = ("bpe", "unigram")
TOKENIZER_TEXTS: tuple[TokenizerTexts, ...] = ("inputs", "dialogues")


def dataset_texts(
    dataset: str, paths: DataPaths, split: str = "train", texts_of: TokenizerTexts = "inputs"
) -> list[str]:
    """The text a from-scratch tokenizer should cover: every utterance and KB record of ``split``.

    Values appear both raw (``pizza_hut``, as responses write them) and spaced (as records are
    linearised), so both forms get pieces. ``inputs`` (the default) adds what the generator reads
    besides: each dialogue's formatted context (the ``user:`` / ``system:`` labels), the passage
    labels, and each record rendered with prompt meta knowledge under a tagging that cycles through
    ranks, confidences and co-occurrence. Without them (``dialogues``, the tokenizer of the reported
    T5 rows) the prompt tags fall apart into letters and ``<unk>``: 28-41 pieces of SMD's 48-token
    record budget before the first field.
    """
    data = get_loader(dataset).load_split(split, paths)
    texts: list[str] = []
    seen_kbs: set[int] = set()
    tagged = 0
    for dialogue in data.dialogues:
        for turn in dialogue.turns:
            texts += [turn.user, turn.response, value_text(turn.response)]
        if texts_of == "inputs" and dialogue.turns:
            texts.append(f"{CONTEXT_LABEL} {format_context(dialogue.context(len(dialogue.turns) - 1))}")
        if id(dialogue.kb) not in seen_kbs:
            seen_kbs.add(id(dialogue.kb))
            texts += [linearise(r) for r in dialogue.kb]
            if texts_of == "inputs":
                for record in dialogue.kb:
                    texts.append(f"{RECORD_LABEL} {render_prompt(cycled_tagging(record, tagged))}")
                    tagged += 1
    return texts


def cycled_tagging(record: Record, i: int) -> TaggedRecord:
    """The ``i``-th of a cycle of taggings (rank 1..5 or the negative, each confidence, old or new), so
    that every phrase of the prompt rendering appears in a tokenizer's training text."""
    rank = i % 6 + 1
    return tagged_as(record, rank, CONFIDENCE_TAGS[i % 3], COOCCURRENCE_TAGS[i % 2], negative=rank == 6)


def train_tokenizer(texts: Sequence[str], model: TokenizerModel = "bpe", vocab_size: int = 8000) -> Any:
    """A T5-layout tokenizer (pad 0, eos 1, unk 2, then the trained pieces and the meta-knowledge tags)
    trained on ``texts`` with SentencePiece's ``bpe`` or ``unigram`` algorithm."""
    if model == "bpe":
        return train_bpe_tokenizer(texts, vocab_size)
    if model == "unigram":
        return train_unigram_tokenizer(texts, vocab_size)
    raise ValueError(f"unknown tokenizer model {model!r}; use one of {', '.join(TOKENIZER_MODELS)}")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8000) -> Any:
    """A tokenizer whose BPE merges (SentencePiece's ``--model_type=bpe``) are learnt from ``texts``.

    Words start with ``▁`` as in SentencePiece, so decoding restores the spaces. BPE builds pieces up
    from characters by corpus frequency, so every frequent word becomes one piece: on the CamRest
    training inputs ``the phone is`` is 3 pieces, against 7 with :func:`train_unigram_tokenizer`. A
    merge needs two occurrences; ``vocab_size`` is an upper bound (CamRest's text stops at about 3.2k
    pieces). Encoding appends ``</s>`` as T5's tokenizer does; the generators add their own eos and
    encode without it.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    pad, eos, unk = _T5_SPECIALS
    tok = Tokenizer(BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(_T5_SPECIALS), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    ids = [tok.token_to_id(t) for t in _T5_SPECIALS]
    if ids != [0, 1, 2]:
        raise RuntimeError(f"BPE trainer gave {_T5_SPECIALS} the ids {ids}; T5 needs 0-2")
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, 1)]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token=unk
    )
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    return tokenizer


def train_unigram_tokenizer(texts: Iterable[str], vocab_size: int = 8000) -> Any:
    """A T5 tokenizer whose unigram vocabulary (the SentencePiece algorithm) is trained on ``texts``.

    Trained with the ``tokenizers`` library's implementation of SentencePiece unigram, with the same
    pre-tokenisation T5's tokenizer applies, so no ``sentencepiece`` package is needed. ``vocab_size``
    is an upper bound: a small corpus yields fewer pieces. The meta-knowledge tags are added as
    unsplittable tokens after the trained pieces.

    The reported T5 rows used it, but on a dataset this small it splits frequent words: the trainer
    seeds its vocabulary with substrings that occur at least twice in the list of *distinct* words,
    whatever their counts, so a word that is part of no other word never becomes a piece (CamRest:
    ``▁the`` is one, ``▁is`` and ``▁food`` are not, ``phone`` is ``▁ p hon e``). Hence BPE, the default.
    """
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer
    from transformers import T5Tokenizer

    tok = Tokenizer(Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(_T5_SPECIALS), unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = [(str(piece), float(score)) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    if [p for p, _ in vocab[:3]] != list(_T5_SPECIALS):
        raise RuntimeError(f"unigram trainer put {vocab[:3]} first; T5 needs {_T5_SPECIALS} at ids 0-2")
    vocab = vocab[:3] + _canonical_unigram_pieces(vocab[3:])
    # No sentinel <extra_id_*> tokens: they serve T5's span-corruption pre-training, which never happens.
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    return tokenizer


# The unigram trainer appends each character of the texts that no trained piece covers with the lowest
# trained score plus this much more than the character appended before it.
_REQUIRED_CHAR_STEP = 1e-4


def _canonical_unigram_pieces(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The unigram trainer's pieces made the same for the same texts in every process.

    Its output depends on Rust's per-process hash seed twice: the EM sums its statistics in hash order,
    so scores differ in the last bits, and the uncovered characters it appends take their scores
    (lowest + 0, + 1e-4, + 2e-4, ...) in hash order. Either way the same `mktod build-backbone` command
    built tokenizers with other ids, hence other models. Here the appended characters take those scores
    in character order, every score is rounded to 1e-6 (noise of 1e-15 crosses a rounding boundary for
    about one piece in 10^9) and the pieces are ordered by score, then by piece.
    """
    floor = min(score for _, score in pieces)

    def rank(score: float) -> int | None:  # its place in the appended characters' scores, if any
        place = round((score - floor) / _REQUIRED_CHAR_STEP)
        return place if abs(score - (floor + place * _REQUIRED_CHAR_STEP)) < 1e-9 else None

    appended = {p: (place, s) for p, s in pieces if len(p) == 1 and (place := rank(s)) is not None}
    scores = [s for _, s in sorted(appended.values())]
    reassigned = dict(zip(sorted(appended), scores, strict=True))
    canonical = [(p, round(reassigned.get(p, s), 6)) for p, s in pieces]
    return sorted(canonical, key=lambda item: (-item[1], item[0]))


def build_t5_from_scratch(
    train_texts: Sequence[str],
    out_dir: Path,
    size: T5Size = "small",
    vocab_size: int = 8000,
    seed: int = 0,
    settings: dict[str, str] | None = None,
    tokenizer_model: TokenizerModel = "bpe",
) -> Backbone:
    """Train a ``tokenizer_model`` tokenizer on ``train_texts`` and save it with a randomly initialised
    T5 in ``out_dir``; ``settings`` (how the texts were chosen) go into its backbone.json."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    if size not in _T5_SHAPES:
        raise ValueError(f"unknown T5 size {size!r}; use one of {', '.join(_T5_SHAPES)}")
    if not train_texts:
        raise ValueError("no training text for the tokenizer")
    tokenizer = train_tokenizer(train_texts, tokenizer_model, vocab_size)
    shape: dict[str, Any] = dict(_T5_SHAPES[size])
    config = T5Config(
        vocab_size=len(tokenizer),
        num_decoder_layers=shape["num_layers"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **shape,
    )
    config.decoder_start_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    info = {"tokenizer": tokenizer_model, **(settings or {})}
    return _save(model, tokenizer, out_dir, f"t5-scratch-{size}", info)


def build_bert2bert(encoder_path: str | Path, out_dir: Path, cross_attention: CrossInit = "self") -> Backbone:
    """An ``EncoderDecoderModel`` warm-started from the BERT-style model at ``encoder_path`` (both sides).

    The decoder is the same checkpoint with ``is_decoder=True`` and new cross-attention, initialised as
    ``cross_attention`` says. BERT has no end-of-sequence token: ``[SEP]`` plays eos, ``[CLS]`` starts
    the decoder, as in Rothe et al. The meta tokens are added to the vocabulary here and both embedding
    matrices grown.
    """
    if cross_attention not in CROSS_INITS:
        choices = ", ".join(CROSS_INITS)
        raise ValueError(f"unknown cross-attention init {cross_attention!r}; use one of {choices}")
    from transformers import AutoTokenizer, EncoderDecoderModel

    source = str(encoder_path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.cls_token
    model: Any = EncoderDecoderModel.from_encoder_decoder_pretrained(source, source)
    if cross_attention == "self":
        copy_self_attention(model.decoder)
    # EncoderDecoderModel.resize_token_embeddings raises; each side resizes on its own.
    model.encoder.resize_token_embeddings(len(tokenizer))
    model.decoder.resize_token_embeddings(len(tokenizer))
    ids = {
        "decoder_start_token_id": tokenizer.cls_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    for name, value in ids.items():
        setattr(model.config, name, value)
        setattr(model.generation_config, name, value)
    model.config.vocab_size = len(tokenizer)
    return _save(model, tokenizer, out_dir, "bert2bert", {"cross_attention": cross_attention})


def copy_self_attention(decoder: Any) -> int:
    """Start each decoder layer's cross-attention as a copy of its (pre-trained) self-attention.

    Random cross-attention attends almost uniformly over all encoder positions, so the decoder first
    learns to ignore the encoder: the CPU CamRest run's generator gave the gold response nearly the
    same likelihood with its own input as with another dialogue's (+0.04 nats at step 150, +1.07 at
    step 400; bench/results/context_use.md). Encoder and decoder start from the same checkpoint, so
    the encoder's outputs are close to the space the decoder's self-attention already reads: a copied
    query/key pair attends from the first step to the encoder tokens that match the decoder's (an
    entity name in a record, say), and the copied value/output pass their content on. Returns how many
    layers were copied.
    """
    layers = list(decoder.bert.encoder.layer)
    for layer in layers:
        if getattr(layer, "crossattention", None) is None:
            raise ValueError("the decoder has no cross-attention to initialise (add_cross_attention=False)")
        layer.crossattention.load_state_dict(layer.attention.state_dict())
    return len(layers)


def _save(
    model: Any, tokenizer: Any, out_dir: Path, kind: str, settings: dict[str, str] | None = None
) -> Backbone:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    parameters = sum(p.numel() for p in model.parameters())
    info = Backbone(out_dir, kind, parameters, len(tokenizer))
    summary = {"kind": kind, "parameters": parameters, "vocab_size": len(tokenizer), **(settings or {})}
    (out_dir / "backbone.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return info
