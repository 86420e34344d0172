"""Decoding constraints shared by the seq2seq and causal generators.

A small or briefly trained generator decoding greedily falls into loops ("... at the corner corner
corner ..."), which cost BLEU and run the response to its length limit. ``no_repeat_ngram_size`` = n
forbids a response to repeat any n-gram of its own. Hugging Face's built-in processor of that name
counts the whole ``input_ids``, which for a decoder-only model include the prompt: it would forbid
copying a phrase of a record ("the golden wok") that the answer must repeat. This one looks only at
the tokens generated after ``start``.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class NoRepeatNGram(LogitsProcessor):
    """Ban every token that would complete an n-gram the response (``input_ids[:, start:]``) already holds."""

    def __init__(self, n: int, start: int = 0) -> None:
        if n < 1:
            raise ValueError(f"no_repeat_ngram_size must be at least 1, got {n}")
        self.n, self.start = n, start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.start :].tolist()
        for row, tokens in enumerate(generated):
            banned = banned_tokens(tokens, self.n)
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


def banned_tokens(tokens: list[int], n: int) -> set[int]:
    """The tokens that, appended to ``tokens``, would repeat one of its n-grams."""
    if len(tokens) < n:
        return set()
    tail = tuple(tokens[len(tokens) - n + 1 :])  # the n-1 tokens a new n-gram would start with
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == tail}


def decoding_processors(no_repeat_ngram_size: int, start: int = 0) -> LogitsProcessorList:
    """The logits processors a generator's config asks for (none with the defaults: plain greedy)."""
    processors = LogitsProcessorList()
    if no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGram(no_repeat_ngram_size, start))
    return processors
