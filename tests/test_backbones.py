"""Offline backbones: a T5 from scratch with a trained tokenizer (BPE or unigram) and a BERT2BERT, tiny."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from retriever_helpers import CAMREST_SAMPLE, save_tiny_model, write_camrest_sample
from transformers import AutoConfig

from mktod.datasets import DataPaths
from mktod.generators.backbones import (
    TOKENIZER_MODELS,
    TokenizerModel,
    build_bert2bert,
    build_t5_from_scratch,
    dataset_texts,
    train_tokenizer,
)
from mktod.generators.base import GeneratorConfig, GeneratorInput
from mktod.generators.seq2seq import Seq2SeqGenerator
from mktod.meta import SPECIAL_TOKENS, negative_record, tag_hits
from mktod.types import Hit, Record, Utterance

torch.set_num_threads(1)

SENTENCES = [
    "i want cheap italian food in the centre",
    "pizza_hut_city_centre serves cheap italian food",
    "pizza hut city centre serves cheap italian food",
    "the phone number is 01223_323737",
    "golden wok is a moderate chinese place in the north",
    "name golden wok ; area north ; food chinese ; pricerange moderate",
] * 3
RECORDS = (
    Record("r1", {"name": "golden_wok", "area": "north", "food": "chinese"}),
    Record("r2", {"name": "pizza_hut", "area": "centre", "food": "italian"}),
)
CONTEXT = (Utterance("user", "i want cheap italian food in the centre"),)


def _batch() -> list[GeneratorInput]:
    tagged = tag_hits([Hit(RECORDS[1], 1.0, 1)], CONTEXT)
    return [
        GeneratorInput(CONTEXT, (*tagged, negative_record(RECORDS, [0.0, 1.0]))),
        GeneratorInput(
            "golden wok please", tag_hits([Hit(r, 1.0, i) for i, r in enumerate(RECORDS, 1)], "x")
        ),
    ]


def _check_generator(path: Path) -> Seq2SeqGenerator:
    gen = Seq2SeqGenerator.from_pretrained(GeneratorConfig(model=str(path), max_target_tokens=6))
    tok = gen.tokenizer
    for token in SPECIAL_TOKENS:
        assert len(tok.encode(token, add_special_tokens=False)) == 1
    # The meta tokens were already in the saved vocabulary: the generator had nothing to grow.
    assert gen.model.get_input_embeddings().weight.shape[0] == len(tok)
    lik = gen.joint_and_single_logprobs(_batch(), ["pizza hut is cheap", "golden wok"], with_no_entity=True)
    assert lik.single.shape == (2, 2) and torch.isfinite(lik.joint).all()
    lik.joint.sum().backward()
    assert all(isinstance(t, str) for t in gen.generate(_batch()))
    return gen


@pytest.mark.parametrize("tokenizer", TOKENIZER_MODELS)
def test_t5_from_scratch_trains_a_tokenizer_and_saves_a_loadable_model(
    tmp_path: Path, tokenizer: TokenizerModel
) -> None:
    built = build_t5_from_scratch(
        SENTENCES, tmp_path / "t5", size="tiny", vocab_size=120, tokenizer_model=tokenizer
    )
    assert built.kind == "t5-scratch-tiny" and built.vocab_size <= 120 + len(SPECIAL_TOKENS)
    info = json.loads((tmp_path / "t5" / "backbone.json").read_text())
    assert info["parameters"] == built.parameters and info["tokenizer"] == tokenizer
    gen = _check_generator(tmp_path / "t5")
    tok = gen.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert gen.model.config.decoder_start_token_id == 0 and gen.model.config.d_model == 128
    # Words of the corpus come back from the pieces unchanged.
    ids = tok.encode("golden wok serves chinese food", add_special_tokens=False)
    assert tok.decode(ids) == "golden wok serves chinese food"
    # Encoding for a user (not the generators, which add their own) ends with eos, as T5's does.
    assert tok.encode("golden wok")[-1] == tok.eos_token_id
    with pytest.raises(ValueError, match="unknown T5 size"):
        build_t5_from_scratch(SENTENCES, tmp_path / "x", size="huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown tokenizer model 'wordpiece'"):
        train_tokenizer(SENTENCES, "wordpiece")  # type: ignore[arg-type]


def test_bpe_keeps_frequent_words_whole_where_unigram_splits_them() -> None:
    # "▁the" is the commonest word of SENTENCES but part of no other word: the unigram trainer seeds
    # its pieces with substrings seen at least twice among distinct words, so it never gets one.
    pieces = {m: train_tokenizer(SENTENCES, m, 200).tokenize("the cheap food") for m in TOKENIZER_MODELS}
    assert pieces["bpe"] == ["▁the", "▁cheap", "▁food"]
    assert len(pieces["unigram"]) > 3 and "▁the" not in pieces["unigram"]


# Trains a tokenizer on the CamRest sample and prints its vocabulary, ids included, and the scores.
TRAIN_AND_PRINT = """\
import json, sys
from mktod.generators.backbones import train_tokenizer
texts = json.loads(sys.stdin.read())
tok = train_tokenizer(texts, sys.argv[1], 300)
print(json.dumps([sorted(tok.get_vocab().items()), tok.backend_tokenizer.to_str()]))
"""


@pytest.mark.parametrize("model", TOKENIZER_MODELS)
def test_the_same_texts_train_the_same_tokenizer_in_every_process(model: TokenizerModel) -> None:
    """Fresh processes, as separate `mktod build-backbone` runs: the unigram trainer's scores and its
    order of equal-score pieces changed with each process's hash seed, so one command built models
    whose ids differed (three processes out of three on this sample before the pieces were sorted)."""
    texts = [line for line in CAMREST_SAMPLE.splitlines() if line]
    texts += [t.replace("_", " ") for t in texts]
    runs = [
        subprocess.run(
            [sys.executable, "-c", TRAIN_AND_PRINT, model],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(3)
    ]
    vocab = json.loads(runs[0])[0]
    assert len(vocab) > 100
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_bert2bert_warm_starts_both_sides_and_works_as_fid(tmp_path: Path) -> None:
    encoder = save_tiny_model(tmp_path / "bert")
    built = build_bert2bert(encoder, tmp_path / "b2b")
    assert built.kind == "bert2bert"
    config = AutoConfig.from_pretrained(tmp_path / "b2b")
    assert config.is_encoder_decoder and config.decoder.is_decoder and config.decoder.add_cross_attention
    gen = _check_generator(tmp_path / "b2b")
    tok = gen.tokenizer
    assert tok.eos_token == "[SEP]" and gen.model.config.decoder_start_token_id == tok.cls_token_id
    assert gen.model.config.pad_token_id == tok.pad_token_id


def test_dataset_texts_cover_utterances_and_records(tmp_path: Path) -> None:
    paths = DataPaths(write_camrest_sample(tmp_path / "data"), tmp_path / "cache")
    texts = dataset_texts("camrest", paths)
    assert "pizza_hut_city_centre serves cheap italian food" in texts
    assert "pizza hut city centre serves cheap italian food" in texts
    assert any(t.startswith("name pizza hut city centre ; ") for t in texts)

    # The default adds what the generator reads: formatted contexts and tagged, labelled records.
    assert any(t.startswith("context: user: ") and " system: " in t for t in texts)
    prompts = [t for t in texts if t.startswith("knowledge: The ")]
    assert any(
        t.startswith("knowledge: The top-1 recalled: with high confidence: existed in history: ")
        for t in prompts
    )
    assert any(t.startswith("knowledge: The negative entity recalled: ") for t in prompts)
    plain = dataset_texts("camrest", paths, texts_of="dialogues")
    assert set(plain) < set(texts) and not any(t.startswith(("context:", "knowledge:")) for t in plain)


def test_a_tokenizer_trained_on_the_inputs_keeps_the_prompt_tags_whole(tmp_path: Path) -> None:
    paths = DataPaths(write_camrest_sample(tmp_path / "data"), tmp_path / "cache")
    tag = "The negative entity recalled: with middle confidence: existed in history:"
    pieces = {
        (model, texts_of): len(
            train_tokenizer(dataset_texts("camrest", paths, texts_of=texts_of), model, 1000).tokenize(tag)
        )
        for model in TOKENIZER_MODELS
        for texts_of in ("inputs", "dialogues")
    }
    # From the dialogues alone the tag falls apart into letters: unigram 56 pieces on the sample, 37
    # with the inputs (45 and 28 on the whole CamRest training split). BPE: 48 (with <unk> for the
    # capital and the colons), 16 with the inputs (only the sample's rare "negative entity" split).
    assert pieces["unigram", "inputs"] < pieces["unigram", "dialogues"] - 10
    assert pieces["bpe", "inputs"] < pieces["unigram", "inputs"] / 2
    assert pieces["bpe", "inputs"] < pieces["bpe", "dialogues"] / 2


def test_bert2bert_cross_attention_can_start_as_a_copy_of_self_attention(tmp_path: Path) -> None:
    from transformers import EncoderDecoderModel

    encoder = save_tiny_model(tmp_path / "bert")
    build_bert2bert(encoder, tmp_path / "self")  # the default
    build_bert2bert(encoder, tmp_path / "random", cross_attention="random")
    copied = EncoderDecoderModel.from_pretrained(tmp_path / "self").decoder.bert.encoder.layer
    fresh = EncoderDecoderModel.from_pretrained(tmp_path / "random").decoder.bert.encoder.layer
    for layer, other in zip(copied, fresh, strict=True):
        own, cross = layer.attention.state_dict(), layer.crossattention.state_dict()
        assert own.keys() == cross.keys() and all(torch.equal(own[k], cross[k]) for k in own)
        # the random init is what EncoderDecoderModel gives: not the self-attention weights
        assert not torch.equal(other.crossattention.self.query.weight, other.attention.self.query.weight)
        assert torch.equal(layer.attention.self.query.weight, other.attention.self.query.weight)
    assert json.loads((tmp_path / "self" / "backbone.json").read_text())["cross_attention"] == "self"
    assert json.loads((tmp_path / "random" / "backbone.json").read_text())["cross_attention"] == "random"
    _check_generator(tmp_path / "self")  # still a working FiD generator
    with pytest.raises(ValueError, match="unknown cross-attention init"):
        build_bert2bert(encoder, tmp_path / "x", cross_attention="zero")  # type: ignore[arg-type]
