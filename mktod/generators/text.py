"""The text a trainable generator reads, independent of its tokenizer (and of torch): how a dialogue
context is written and the labels in front of a seq2seq passage's two parts. A from-scratch tokenizer
(mktod.generators.backbones) is trained on this same text."""

from __future__ import annotations

from collections.abc import Sequence

from mktod.types import Utterance

CONTEXT_LABEL = "context:"
RECORD_LABEL = "knowledge:"


def format_context(context: Sequence[Utterance] | str) -> str:
    if isinstance(context, str):
        return context
    return " ".join(f"{u.speaker}: {u.text}" for u in context)


def last_user_message(context: Sequence[Utterance] | str) -> str:
    """The latest user utterance of ``context``. A context given as text is taken to be
    :func:`format_context`'s output: what follows its last ``user:`` label (all of it without one)."""
    if isinstance(context, str):
        _, label, text = context.rpartition("user:")
        return (text if label else context).strip()
    return next((u.text for u in reversed(context) if u.speaker == "user"), "")
