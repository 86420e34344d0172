"""A tiny Llama (random weights) and a word-level tokenizer with a chat template: nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

_TEXT = (
    "user system assistant dialogue knowledge none name area food pricerange phone centre north chinese "
    "italian cheap moderate jinling noodle bar golden wok pizza hut i want a place to eat in the it is "
    "there how about sure number ; : . ? ( ) | < > /"
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_causal_tokenizer(
    chat_template: bool = True, extra_words: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """``extra_words`` are appended to the vocabulary (the default ids stay as they are)."""
    words = [
        "<pad>",
        "</s>",
        "<unk>",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        *dict.fromkeys((*_TEXT.split(), *extra_words)),
    ]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    if chat_template:
        out.chat_template = CHAT_TEMPLATE
    return out


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def save_tiny_llama(path: Path, seed: int = 0) -> Path:
    tokenizer = tiny_causal_tokenizer()
    tiny_llama(len(tokenizer), seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
