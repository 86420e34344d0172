"""A trained encoder saved as a quantised delta over its base (mktod.encoder_delta): what ships with
the default pipeline instead of 90 MB of retriever weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from retriever_helpers import save_tiny_model
from safetensors.torch import load_file, save_file

from mktod.encoder import DenseEncoder, EncoderConfig
from mktod.encoder_delta import DELTA_FILE, DeltaInfo, dequantise, fingerprint, quantise
from mktod.errors import ConfigError
from mktod.retriever import Retriever, build_retriever

CONTEXTS = ["user: i want cheap italian food in the centre", "user: where is it ? system: golden_wok"]
RECORDS = ["pizza_hut_city_centre centre italian cheap", "golden_wok north chinese moderate"]
EMBEDDING = "embeddings.word_embeddings.weight"


@pytest.mark.parametrize("bits", [4, 8])
def test_quantise_round_trip_is_within_half_a_step(bits: int) -> None:
    torch.manual_seed(0)
    values = torch.randn(1000) * torch.linspace(0.01, 3, 1000)  # groups of very different scales
    codes, scale = quantise(values, bits, group=64)
    assert codes.dtype == torch.uint8 and scale.dtype == torch.bfloat16
    # 1000 values pad to 16 groups of 64; at 4 bits two codes share a byte.
    assert scale.numel() == 16 and codes.numel() == 1024 * bits // 8
    restored = dequantise(codes, scale, bits, 64, values.numel())
    step = scale.float().repeat_interleave(64)[: values.numel()]
    assert torch.all((restored - values).abs() <= step / 2 + 1e-6)
    qmax = 2 ** (bits - 1) - 1
    assert torch.allclose(restored.abs().reshape(-1)[:960].reshape(15, 64).amax(1), scale[:15].float() * qmax)


def test_a_group_of_zeros_stays_zero() -> None:
    codes, scale = quantise(torch.zeros(64), 4, 64)
    assert torch.equal(dequantise(codes, scale, 4, 64, 64), torch.zeros(64))


def _base_and_trained(tmp_path: Path, shared: bool = True) -> tuple[Path, DenseEncoder]:
    """A tiny base model folder, and an encoder on it whose weights moved as fine-tuning moves them:
    every layer a little, a few embedding rows (the tokens it saw), the rest of the table not at all."""
    base = save_tiny_model(tmp_path / "base")
    encoder = DenseEncoder.from_pretrained(EncoderConfig(model=str(base), shared=shared))
    torch.manual_seed(1)
    towers = [encoder.context_model] + ([] if encoder.record_model is None else [encoder.record_model])
    with torch.no_grad():
        for tower in towers:
            for name, param in tower.named_parameters():
                if name == EMBEDDING:
                    param[[3, 7, 11]] += 0.05 * torch.randn(3, param.shape[1])
                elif not name.startswith("pooler"):
                    param += 5e-4 * torch.randn_like(param)  # ~2% of a weight (init std 0.02)
    return base, encoder


@pytest.mark.parametrize(("bits", "share"), [(8, 0.02), (4, 0.15)])
def test_delta_round_trip_reproduces_the_trained_embeddings(tmp_path: Path, bits: int, share: float) -> None:
    """The loaded encoder's embeddings lie close to the trained ones: their distance is a small share
    (quantisation error) of how far training moved them from the base's."""
    base, trained = _base_and_trained(tmp_path)
    trained.save(tmp_path / "delta", delta_bits=bits)
    assert not (tmp_path / "delta" / "context").exists()  # no full weights, no tokenizer copy
    loaded = DenseEncoder.load(tmp_path / "delta")
    assert loaded.config == trained.config
    assert loaded.context_tokenizer.truncation_side == "left"
    untuned = DenseEncoder.from_pretrained(EncoderConfig(model=str(base)))
    for embed in ("embed_contexts", "embed_records"):
        texts = CONTEXTS if embed == "embed_contexts" else RECORDS
        want, got = getattr(trained, embed)(texts), getattr(loaded, embed)(texts)
        moved = np.abs(want - getattr(untuned, embed)(texts)).max()
        assert np.abs(got - want).max() < share * moved, embed


def test_only_moved_rows_of_a_matrix_are_stored(tmp_path: Path) -> None:
    _, trained = _base_and_trained(tmp_path)
    trained.save(tmp_path / "delta", delta_bits=4)
    tensors = load_file(str(tmp_path / "delta" / DELTA_FILE))
    assert tensors[f"context.{EMBEDDING}.rows"].tolist() == [3, 7, 11]
    assert f"context.{EMBEDDING}.q" in tensors
    # Every row of a layer's matrix moved, so no row index is stored; biases are stored exactly.
    layer = "context.encoder.layer.0.attention.self.query"
    assert f"{layer}.weight.q" in tensors and f"{layer}.weight.rows" not in tensors
    assert tensors[f"{layer}.bias.full"].dtype == torch.float32
    assert not any(k.startswith("context.pooler") for k in tensors)  # unmoved: nothing stored


def test_separate_towers_each_keep_their_own_delta(tmp_path: Path) -> None:
    _, trained = _base_and_trained(tmp_path, shared=False)
    trained.save(tmp_path / "delta", delta_bits=8)
    loaded = DenseEncoder.load(tmp_path / "delta")
    assert loaded.record_model is not None
    np.testing.assert_allclose(loaded.embed_records(RECORDS), trained.embed_records(RECORDS), atol=2e-3)
    np.testing.assert_allclose(loaded.embed_contexts(CONTEXTS), trained.embed_contexts(CONTEXTS), atol=2e-3)


def test_a_delta_refuses_a_different_base(tmp_path: Path) -> None:
    base, trained = _base_and_trained(tmp_path)
    trained.save(tmp_path / "delta", delta_bits=4)
    save_tiny_model(base, seed=5)  # the base folder now holds other weights
    with pytest.raises(ConfigError, match="other weights"):
        DenseEncoder.load(tmp_path / "delta")


def test_a_damaged_delta_folder_says_what_is_wrong(tmp_path: Path) -> None:
    _, trained = _base_and_trained(tmp_path)
    folder = tmp_path / "delta"
    trained.save(folder, delta_bits=4)
    meta = json.loads((folder / "encoder.json").read_text())
    meta["delta"]["bits"] = 3
    (folder / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"encoder\.json: field 'delta': delta bits must be one of"):
        DenseEncoder.load(folder)
    meta["delta"]["bits"] = 4
    (folder / "encoder.json").write_text(json.dumps(meta))
    tensors = load_file(str(folder / DELTA_FILE))
    save_file({"context.no.such.weight.full": torch.zeros(2), **tensors}, str(folder / DELTA_FILE))
    with pytest.raises(ConfigError, match=r"'context\.no\.such\.weight'"):
        DenseEncoder.load(folder)
    key = f"context.{EMBEDDING}"
    short = {**tensors, f"{key}.q": tensors[f"{key}.q"][:-1]}  # a truncated file's codes
    save_file(short, str(folder / DELTA_FILE))
    with pytest.raises(ConfigError, match=r"the delta of 'context\.embeddings\.word_embeddings\.weight' is"):
        DenseEncoder.load(folder)
    save_file({k: v for k, v in tensors.items() if k != f"{key}.scale"}, str(folder / DELTA_FILE))
    with pytest.raises(ConfigError, match="is damaged"):
        DenseEncoder.load(folder)
    (folder / DELTA_FILE).unlink()
    with pytest.raises(ConfigError, match=r"delta\.safetensors is missing"):
        DenseEncoder.load(folder)


def test_a_retriever_saved_as_a_delta_loads_through_build_retriever(tmp_path: Path) -> None:
    _, trained = _base_and_trained(tmp_path)
    Retriever(trained).save(tmp_path / "retriever", delta_bits=8)
    loaded = build_retriever(str(tmp_path / "retriever"))
    assert isinstance(loaded, Retriever)
    np.testing.assert_allclose(
        loaded.encoder.embed_records(RECORDS), trained.embed_records(RECORDS), atol=2e-3
    )


def test_a_delta_needs_a_loadable_base(tmp_path: Path) -> None:
    _, trained = _base_and_trained(tmp_path)
    trained.config = EncoderConfig(model=str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match="cannot load encoder model"):
        trained.save(tmp_path / "delta", delta_bits=4)


def test_delta_info_validation() -> None:
    with pytest.raises(ValueError, match="group"):
        DeltaInfo(base_fingerprint="x", group=3)
    with pytest.raises(ValueError, match="row_tolerance"):
        DeltaInfo(base_fingerprint="x", row_tolerance=1.5)


def test_fingerprint_sees_any_change() -> None:
    state = {"a": torch.ones(3), "b": torch.zeros(2, 2)}
    same = {"b": torch.zeros(2, 2), "a": torch.ones(3)}
    assert fingerprint(state) == fingerprint(same)
    state["a"][1] = 1.0 + 1e-6
    assert fingerprint(state) != fingerprint(same)
