"""Tiny models and data for the retriever tests: a random 2-layer BERT and a 3-dialogue CamRest sample.

Nothing is downloaded: the tokenizer's vocabulary is made from the words the tests use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import BertConfig, BertTokenizer

from mktod.encoder import DenseEncoder, EncoderConfig

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# CamRest rows (columns: address area food location phone postcode pricerange name).
_ROWS = {
    "pizza": "regent_street_city_centre centre italian 52.2,0.12 01223_323737 c.b_2,_1_a.b cheap "
    "pizza_hut_city_centre",
    "sock": "finders_corner_newmarket_road east international 52.2,0.22 01223_812660 c.b_25,_9_a.q cheap "
    "the_missing_sock",
    "wok": "191_histon_road_chesterton north chinese 52.2,0.11 01223_350688 c.b_4,_3_h.l moderate golden_wok",
}
# Three dialogues: KB row keys, then (user, system, gold entities) per turn.
_DIALOGUES = [
    (
        ("pizza", "sock", "wok"),
        [
            ("i want cheap italian food in the centre", "pizza_hut_city_centre serves cheap italian food",
             ["pizza_hut_city_centre", "cheap", "italian"]),
            ("what is the phone number ?", "the phone number is 01223_323737", ["01223_323737"]),
            ("thanks , bye", "goodbye", []),
        ],
    ),
    (
        ("wok", "sock", "pizza"),
        [
            ("i need chinese food in the north", "golden_wok is a moderate chinese place in the north",
             ["golden_wok", "moderate", "chinese", "north"]),
            ("where is it ?", "golden_wok is at 191_histon_road_chesterton", ["191_histon_road_chesterton"]),
            ("thank you", "you are welcome", []),
        ],
    ),
    (
        ("sock", "wok", "pizza"),
        [
            ("anything cheap in the east ?", "the_missing_sock is cheap international food in the east",
             ["the_missing_sock", "cheap", "international", "east"]),
            ("what is the address ?", "it is at finders_corner_newmarket_road",
             ["finders_corner_newmarket_road"]),
            ("great , bye", "bye", []),
        ],
    ),
]  # fmt: skip


def _render_sample() -> str:
    lines = []
    for rows, turns in _DIALOGUES:
        lines += ["0 " + "\t".join(_ROWS[key].split()) for key in rows]
        lines += [f"{i} {user}\t{system}\t{gold!r}" for i, (user, system, gold) in enumerate(turns, 1)]
        lines.append("")
    return "\n".join(lines)


CAMREST_SAMPLE = _render_sample()


def write_camrest_sample(root: Path) -> Path:
    """A data dir whose CamRest train, dev and test splits are the 3-dialogue sample."""
    folder = root / "camrest" / "eer_txt"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.txt").write_text(CAMREST_SAMPLE, encoding="utf-8")
    # The large-scale KB also reads CDNet's KBs (restaurants the EER dialogues never show): none here.
    cdnet = root / "camrest" / "cdnet"
    cdnet.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        (cdnet / f"{split}.json").write_text("[]", encoding="utf-8")
    return root


def tiny_tokenizer(texts: Iterable[str] = ()) -> BertTokenizer:
    words = {"user", "system", ":", ";", ",", ".", "?", "name", "area", "food", "pricerange"}
    for text in [CAMREST_SAMPLE, *texts]:
        words.update(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower().replace("_", " ")))
    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(words - set(SPECIALS)))}
    return BertTokenizer(vocab=vocab)


def tiny_bert_config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=160,
    )


def tiny_encoder(seed: int = 0, **config: object) -> DenseEncoder:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    cfg = EncoderConfig(model="tiny", **config)  # type: ignore[arg-type]
    return DenseEncoder.from_config(tiny_bert_config(len(tokenizer.get_vocab())), tokenizer, cfg)


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """A tiny random BERT + tokenizer saved like a hub model, for configs that name a model folder."""
    encoder = tiny_encoder(seed)
    encoder.context_model.save_pretrained(path)
    encoder.context_tokenizer.save_pretrained(path)
    return path
