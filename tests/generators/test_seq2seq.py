"""Fusion-in-Decoder generator on a tiny T5 and a word-level tokenizer built in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from mktod.generators.base import (
    GeneratorConfig,
    GeneratorInput,
    TrainableGenerator,
    build_generator,
)
from mktod.generators.seq2seq import IGNORE_INDEX, Seq2SeqGenerator
from mktod.losses import sequence_logprob
from mktod.meta import SPECIAL_TOKENS, MetaConfig, negative_record, tag_hits
from mktod.types import Hit, Record, Utterance

# A word-level vocabulary is enough: the tests check tensor plumbing, not language.
_TEXT = (
    "user system context knowledge name area food pricerange phone centre north chinese italian cheap "
    "moderate jinling noodle bar golden wok pizza hut i want a place to eat in the it is there how about "
    "sure number ; : . ?"
)
WORDS = tuple(_TEXT.split())


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *dict.fromkeys(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_t5(vocab_size: int) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5ForConditionalGeneration(cfg).eval()


def make_generator(**cfg: int) -> Seq2SeqGenerator:
    tokenizer = tiny_tokenizer()
    return Seq2SeqGenerator(tiny_t5(len(tokenizer)), tokenizer, GeneratorConfig(model="tiny", **cfg))


RECORDS = (
    Record("r1", {"name": "jinling_noodle_bar", "area": "centre", "food": "chinese", "phone": "1"}),
    Record("r2", {"name": "golden_wok", "area": "north", "food": "chinese", "phone": "2"}),
    Record("r3", {"name": "pizza_hut", "area": "centre", "food": "italian", "phone": "3"}),
)
CONTEXT = (Utterance("user", "i want a chinese place to eat"), Utterance("system", "how about golden wok ?"))


def batch() -> list[GeneratorInput]:
    first = tag_hits(
        [Hit(r, s, i + 1) for i, (r, s) in enumerate(zip(RECORDS, (2.0, 1.0, 0.5), strict=True))], CONTEXT
    )
    second = tag_hits([Hit(RECORDS[2], 1.0, 1)], "i want italian food in the centre")
    second = (*second, negative_record(RECORDS, [0.0, -3.0, 1.0]))
    return [GeneratorInput(CONTEXT, first), GeneratorInput("i want italian food in the centre", second)]


RESPONSES = ["jinling noodle bar is in the centre .", "pizza hut is cheap"]


def test_special_tokens_added_and_embeddings_resized() -> None:
    gen = make_generator()
    tok = gen.tokenizer
    for token in SPECIAL_TOKENS:
        assert len(tok.encode(token, add_special_tokens=False)) == 1
    assert (
        gen.model.get_input_embeddings().weight.shape[0] == len(tok) == len(WORDS) + 3 + len(SPECIAL_TOKENS)
    )
    ids = tok.encode("<old-entity> <high-confidence> <1th-entity> name", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == ["<old-entity>", "<high-confidence>", "<1th-entity>", "name"]


def test_spare_embedding_rows_are_never_cut() -> None:
    tokenizer = tiny_tokenizer()
    model = tiny_t5(200)  # like T5's 32128 rows for 32100 pieces
    Seq2SeqGenerator(model, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == 200


def test_fid_layout_shapes_and_record_mask() -> None:
    gen = make_generator()
    ids, attention, record_mask, k = gen.passages(batch(), with_no_entity=True)
    assert k == 3
    assert record_mask.tolist() == [[True, True, True], [True, True, False]]
    assert ids.shape[0] == 3 + 2 + 2 and ids.shape == attention.shape
    enc = gen._encode_passages(batch(), with_no_entity=False)
    width = ids.shape[1]
    assert enc.hidden.shape == (2 * 3, width, 32)
    assert enc.joint_hidden.shape == (2, 3 * width, 32) and enc.joint_attention.shape == (2, 3 * width)
    # The empty third slot of turn 2 is invisible to the decoder.
    assert enc.attention[5].sum() == 0 and enc.hidden[5].abs().sum() == 0


def test_passage_budgets_keep_latest_turns_and_record_head() -> None:
    gen = make_generator(max_context_tokens=6, max_record_tokens=4)
    context = "the first turn . i want a place"  # 8 words
    record = tag_hits([Hit(RECORDS[0], 1.0, 1)], context)[0]
    ids, _, _, _ = gen.passages([GeneratorInput(context, (record,))])
    tokens = gen.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    # "context :" + the last 4 words; "knowledge :" + the first 2 tag tokens; eos.
    assert tokens == ["context", ":", "i", "want", "a", "place", "knowledge", ":", "<new-entity>",
                      "<high-confidence>", "</s>"]  # fmt: skip
    # The record was cut (its label and tags, then its fields, are longer than 4): counted for the warning.
    assert (gen.record_cuts.seen, gen.record_cuts.cut, gen.record_cuts.cap) == (1, 1, 4)
    assert gen.record_cuts.longest > 4 and gen.record_cuts.summary()["records_cut"] == 100.0


def separate_logprob(gen: Seq2SeqGenerator, passages: list[list[int]], response: str) -> torch.Tensor:
    """The standard way: encode each passage on its own (no padding), then decode over their concat."""
    encoder = gen.model.get_encoder()
    hidden = torch.cat([encoder(input_ids=torch.tensor([p])).last_hidden_state for p in passages], dim=1)
    labels = gen.labels([response])
    out = gen.model(
        encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
        attention_mask=torch.ones(hidden.shape[:2], dtype=torch.long),
        labels=labels,
    )
    return sequence_logprob(out.logits, labels)[0]


def real_passages(gen: Seq2SeqGenerator, with_no_entity: bool = False) -> list[list[int]]:
    ids, attention, _, _ = gen.passages(batch(), with_no_entity)
    return [row[: int(m.sum())].tolist() for row, m in zip(ids, attention, strict=True)]


def test_joint_logprob_equals_standard_fid_forward() -> None:
    gen = make_generator()
    out = gen.joint_and_single_logprobs(batch(), RESPONSES)
    passages = real_passages(gen)
    expected = [
        separate_logprob(gen, passages[:3], RESPONSES[0]),
        separate_logprob(gen, passages[3:], RESPONSES[1]),
    ]
    assert out.joint.shape == (2,)
    torch.testing.assert_close(out.joint, torch.stack(expected), atol=1e-5, rtol=0)


def test_single_logprobs_equal_separate_one_record_passes() -> None:
    gen = make_generator()
    out = gen.joint_and_single_logprobs(batch(), RESPONSES, with_no_entity=True)
    passages = real_passages(gen, with_no_entity=True)
    slots = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert out.single.shape == (2, 3) and out.mask.tolist() == [[True, True, True], [True, True, False]]
    for passage, (b, i) in zip(passages, slots, strict=False):
        # A full forward (encoder included) on the one passage, through the model's own loss path.
        labels = gen.labels([RESPONSES[b]])
        logits = gen.model(input_ids=torch.tensor([passage]), labels=labels).logits
        torch.testing.assert_close(out.single[b, i], sequence_logprob(logits, labels)[0], atol=1e-5, rtol=0)
    assert out.single[1, 2] == 0
    assert out.no_entity is not None and out.no_entity.shape == (2,)
    for b, passage in enumerate(passages[5:]):
        assert gen.tokenizer.convert_ids_to_tokens(passage)[-2] != ":"  # context only, no record label
        labels = gen.labels([RESPONSES[b]])
        logits = gen.model(input_ids=torch.tensor([passage]), labels=labels).logits
        torch.testing.assert_close(out.no_entity[b], sequence_logprob(logits, labels)[0], atol=1e-5, rtol=0)
    assert out.lengths.tolist() == (gen.labels(RESPONSES) != IGNORE_INDEX).sum(-1).tolist()


def test_likelihoods_are_differentiable() -> None:
    gen = make_generator()
    gen.model.train()
    out = gen.joint_and_single_logprobs(batch(), RESPONSES)
    (out.joint.sum() + (out.single * out.mask).sum()).backward()
    grads = [p.grad for p in gen.model.get_encoder().parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads if g is not None)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_greedy_and_beam(num_beams: int) -> None:
    gen = make_generator(max_target_tokens=5, num_beams=num_beams)
    gen.model.train()
    texts = gen.generate(batch())
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert all(len(t.split()) <= 5 for t in texts)
    assert gen.model.training  # the caller's mode is restored
    # A turn with no records still gets an answer (from a context-only passage).
    assert len(gen.generate([GeneratorInput("i want a place", ())])) == 1


def test_build_generator_from_local_dir(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    tiny_t5(len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    gen = build_generator(
        GeneratorConfig(model=str(tmp_path), max_target_tokens=3), MetaConfig(mode="prompt")
    )
    assert isinstance(gen, Seq2SeqGenerator) and isinstance(gen, TrainableGenerator)
    assert "<old-entity>" not in gen.tokenizer.get_vocab()  # prompt mode needs no new tokens
    assert len(gen.generate(batch())) == 2
    with pytest.raises(ValueError, match="unknown generator kind"):
        build_generator(GeneratorConfig(kind="nope"))


def test_joint_logprobs_alone_match_the_joint_term() -> None:
    gen = make_generator()
    torch.testing.assert_close(
        gen.joint_logprobs(batch(), RESPONSES), gen.joint_and_single_logprobs(batch(), RESPONSES).joint
    )
    with pytest.raises(ValueError, match="2 turns but 1 responses"):
        gen.joint_logprobs(batch(), RESPONSES[:1])


def test_single_likelihoods_without_dropout_are_the_eval_mode_ones() -> None:
    # loss.mml_dropout false: every record's likelihood must be free of its own dropout noise, or MML
    # follows the noise. The joint likelihood (NLL) keeps its decoder dropout.
    gen = make_generator()
    gen.model.eval()
    clean = gen.joint_and_single_logprobs(batch(), RESPONSES, with_no_entity=True)
    gen.model.train()  # T5's dropout_rate 0.1
    torch.manual_seed(1)
    quiet = gen.joint_and_single_logprobs(batch(), RESPONSES, with_no_entity=True, single_dropout=False)
    assert gen.model.training  # the mode it found is restored
    torch.testing.assert_close(quiet.single, clean.single, atol=1e-5, rtol=0)
    assert quiet.no_entity is not None and clean.no_entity is not None
    torch.testing.assert_close(quiet.no_entity, clean.no_entity, atol=1e-5, rtol=0)
    assert not torch.allclose(quiet.joint, clean.joint, atol=1e-4)  # decoder dropout still on
    noisy = gen.joint_and_single_logprobs(batch(), RESPONSES, with_no_entity=True)
    assert not torch.allclose(noisy.single, clean.single, atol=1e-4)  # the default: dropout everywhere
    (quiet.joint.sum() + (quiet.single * quiet.mask).sum()).backward()  # still differentiable
    assert all(p.grad is not None for p in gen.model.get_encoder().parameters() if p.requires_grad)


def test_a_missing_model_folder_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mktod.errors import ConfigError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "backbones" / "not-built"
    with pytest.raises(ConfigError, match=f"generator.model '{missing}': no model folder at {missing}"):
        Seq2SeqGenerator.from_pretrained(GeneratorConfig(model=str(missing)))
