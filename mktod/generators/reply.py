"""The response alone, out of what a language model wrote after the prompt.

A small or under-trained language model often goes on past its answer and invents the user's next
turn, or starts with a role label. Both generators that decode free text pass their output through
:func:`clean_reply`, so neither the metrics nor a chat user see the invented turn:

- mktod.generators.causal reads the dialogue as one line of ``user: ... system: ...``, so its invented
  turns come inline (``... moderate price range user: can you ...``, or a second ``system:`` turn):
  ``inline=True``;
- mktod.generators.openai_chat sends the dialogue as chat messages, so a chat model's invented turn
  starts a new line; ``user:`` inside a line stays (the model may be quoting the user).
"""

from __future__ import annotations

import re

_ROLE_LABELS = ("system:", "assistant:", "response:", "system response:")

# A next turn inside a line: ``user:`` or ``system:`` after white space ("reuser:" is not one). The
# causal CPU runs write both: "... moderately priced system: golden wok is ... user: thank you".
_INLINE_TURN = re.compile(r"\s(?:user|system):", re.IGNORECASE)


def clean_reply(text: str, inline: bool = False) -> str:
    """The response alone: no leading role label, nothing from an invented next user turn on (a line
    that starts with ``user:``; with ``inline`` also ``user:`` or ``system:`` within a line), white space
    collapsed."""
    lines: list[str] = []
    for line in text.strip().splitlines():
        if line.strip().lower().startswith("user:"):
            break
        lines.append(line)
    reply = " ".join(" ".join(lines).split())
    lowered = reply.lower()
    for label in sorted(_ROLE_LABELS, key=len, reverse=True):
        if lowered.startswith(label):
            reply = reply[len(label) :].strip()
            break
    turn = _INLINE_TURN.search(reply) if inline else None
    return reply[: turn.start()].rstrip() if turn is not None else reply
