"""clean_reply: the response alone, whatever the model wrote after it."""

from __future__ import annotations

import pytest

from mktod.generators.reply import clean_reply


@pytest.mark.parametrize(
    ("written", "reply"),
    [
        ("  System: golden wok is at 1 main street.\nUser: thanks", "golden wok is at 1 main street."),
        ("assistant:   sure ,\n  it is cheap", "sure , it is cheap"),
        ("system response: it is cheap", "it is cheap"),
        ("the system is down", "the system is down"),
        ("user: thanks", ""),
        ("", ""),
        ("you said user: italian ?", "you said user: italian ?"),  # a chat model quoting the user
    ],
)
def test_clean_reply_cuts_a_next_turn_on_a_new_line(written: str, reply: str) -> None:
    assert clean_reply(written) == reply


@pytest.mark.parametrize(
    ("written", "reply"),
    [
        # the causal generator's context format is one line, so its invented turn comes inline
        (
            "curry prince is in the east user: can you recommend a place near the cinema ?",
            "curry prince is in the east",
        ),
        ("there are no welsh places ? USER: italian system: da vinci", "there are no welsh places ?"),
        ("system: it is cheap\nuser: thanks", "it is cheap"),
        ("it is moderately priced system: golden wok is in the north", "it is moderately priced"),
        ("ask the reuser: desk", "ask the reuser: desk"),  # not a turn: "user:" is not a word of its own
    ],
)
def test_clean_reply_inline_cuts_a_next_turn_within_the_line(written: str, reply: str) -> None:
    assert clean_reply(written, inline=True) == reply
