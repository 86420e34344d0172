"""Decoding constraints: the n-gram ban counts the response only, never the prompt's records."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from causal_helpers import tiny_causal_tokenizer, tiny_llama

from mktod.generators.base import GeneratorConfig, GeneratorInput
from mktod.generators.causal import CausalGenerator
from mktod.generators.decoding import NoRepeatNGram, banned_tokens, decoding_processors
from mktod.meta import tag_hits
from mktod.types import Hit, Record


def test_banned_tokens_complete_an_ngram_the_response_already_holds() -> None:
    assert banned_tokens([1, 2, 3, 1, 2], 3) == {3}  # (1, 2) was followed by 3
    assert banned_tokens([5, 6, 5, 7, 5], 2) == {6, 7}  # 5 was followed by 6 and by 7
    assert banned_tokens([1, 2, 3], 3) == set()  # (2, 3) never came before
    assert banned_tokens([1, 2], 3) == set()  # too short for a repeat
    assert banned_tokens([4, 4, 9], 1) == {4, 9}  # n = 1: no token twice


def test_the_processor_ignores_what_comes_before_start() -> None:
    prompt = [1, 2, 3]  # a record's phrase in the prompt
    ids = torch.tensor([[*prompt, 0, 1, 2], [*prompt, 7, 7, 7]])
    scores = torch.zeros(2, 10)
    out = NoRepeatNGram(3, start=len(prompt))(ids, scores.clone())  # type: ignore[arg-type]
    assert torch.isfinite(out[0]).all()  # (1, 2, 3) is the prompt's, so the response may say it
    assert torch.isinf(NoRepeatNGram(3, start=0)(ids, scores.clone())[0, 3])  # counting the prompt: banned
    assert torch.isinf(out[1, 7]) and torch.isfinite(out[1, :7]).all()  # (7, 7, 7) twice: the response's
    assert len(decoding_processors(0)) == 0 and len(decoding_processors(2, start=5)) == 1
    with pytest.raises(ValueError, match="at least 1"):
        NoRepeatNGram(0)


def test_config_rejects_a_negative_size() -> None:
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be 0"):
        GeneratorConfig(no_repeat_ngram_size=-1)
    with pytest.raises(ValueError, match="num_beams"):
        GeneratorConfig(num_beams=0)


def test_a_looping_model_says_the_records_name_once_under_the_ban() -> None:
    """Trained to loop on a record's name, greedy decoding repeats it; with no_repeat_ngram_size = 2
    the response still copies the name from the record (the prompt's bigram), but only once."""
    tokenizer = tiny_causal_tokenizer()
    cfg = GeneratorConfig(kind="causal", model="tiny", max_target_tokens=8)
    gen = CausalGenerator(tiny_llama(len(tokenizer)), tokenizer, cfg, "prompt")
    record = Record("r", {"name": "golden_wok", "area": "north"})
    item = GeneratorInput("i want chinese food", tag_hits([Hit(record, 1.0, 1)], "i want chinese food"))
    target = "golden wok golden wok golden wok golden wok"
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(gen.model.parameters(), lr=1e-2)
    gen.model.train()
    for _ in range(80):  # overfit the loop
        optimiser.zero_grad()
        (-gen.joint_logprobs([item], [target]).sum()).backward()
        optimiser.step()
    assert gen.generate([item])[0].startswith("golden wok golden wok")
    gen.cfg = dataclasses.replace(cfg, no_repeat_ngram_size=2)
    said = gen.generate([item])[0]
    assert said.startswith("golden wok") and said.count("golden wok") == 1, said
