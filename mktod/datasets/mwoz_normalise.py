"""Turn GraphDialog's MultiWOZ text into DF-Net's token forms, and find a response's gold entities.

GraphDialog's text (``mwoz/graphdialog_nokb_txt``) is DF-Net's text with ``,`` ``.`` ``'`` removed and
no entity joining: ``rosa s bed and breakfast has 4 stars`` where DF-Net has
``rosa_'_s_bed_and_breakfast has a 4_star rating``. The steps, each measured against DF-Net dev (whose
dialogues are GraphDialog's valid split):

1. glue split postcodes and phone numbers (``c.b 2 1 a.b`` -> ``cb21ab``, ``01223 308681``) when the glued
   form is a known value or has a postcode's / phone number's shape, and drop the stray ``.``/``,``
   GraphDialog left inside words (``ok.book``);
2. join entity mentions, longest first on token boundaries, against the DB values of the dialogue's domain,
   the other DB values and the global entity list (in that order of preference), plus star ratings
   (``4 stars``, ``four-star`` -> ``4_star``). Multi-word ``choice`` values (``a lot of``) stay unjoined:
   DF-Net joined them only where annotated, and joining them everywhere lowers agreement;
3. restore DF-Net's apostrophe tokens in contractions (``i m`` -> ``i ' m``, ``don t`` -> ``don ' t``);
4. end an utterance that has no final ``?``/``!`` with `` .``, as 91 % of such DF-Net dev responses end.
   Commas and sentence-internal full stops cannot be recovered and stay missing.

Gold entities are the response tokens that are global-list entities, with the ``choice`` / ``free`` context
rules of the MWOZ Entity F1 (EVALUATION.md) since DF-Net's gold lists only hold annotated counts, plus
booking references (8-character codes next to "reference"/"ref"/"confirmation"), which DF-Net's gold lists
hold but its global list mostly lacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mktod.datasets.mwoz_db import normalise_value
from mktod.types import Record

_PUNCT_EDGES = "',."
_STAR_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}
# Clitics GraphDialog left after deleting the apostrophe; "t" only after a negation (don, can, isn ...).
_CLITICS = frozenset({"s", "t", "m", "re", "ll", "ve", "d"})
_REF_KEYWORD = re.compile(r"^(reference|ref|confirmation|booking)")
_REF_CODE = re.compile(r"[a-z0-9]{8}")
_REF_LEADS = frozenset({"is", ":", "number", "number:", "code", "code:", "#", "ref#", "reference:"})
# Choice values that never count (EVALUATION.md: "to"; "no"/"none" measured on DF-Net dev/test gold).
_CHOICE_NEVER = frozenset({"to", "no", "none"})
_CHOICE_LEAD = re.compile(r"(there are|there is|found|have about|have)( only)?$")
_FREE_NOT = frozenset({"parking", "internet", "wifi", "wi-fi"})
# Cambridge postcodes and UK phone numbers, for spellings missing from the DB (other venues, typos).
_POSTCODE = re.compile(r"cb\d{2,3}[a-z]{2}")
_PHONE = re.compile(r"0\d{10}")
_FINAL_MARKS = frozenset({"?", "!", "."})
_STRAY_PUNCT = re.compile(r"(?<!\d)[.,]|[.,](?!\d)")


def surface(joined: str) -> tuple[str, ...]:
    """How a joined value reads in GraphDialog's text: its words, with DF-Net's punctuation tokens gone."""
    pieces = (piece.strip(_PUNCT_EDGES) for piece in joined.split("_"))
    return tuple(piece for piece in pieces if piece)


@dataclass(frozen=True)
class EntityLexicon:
    """Surface word sequence -> joined form for one domain, and the global list's entities by surface."""

    phrases: Mapping[tuple[str, ...], str]
    max_len: int
    global_slots: Mapping[tuple[str, ...], frozenset[str]]
    glue_values: frozenset[str]


def build_lexicon(
    global_entities: Mapping[str, Sequence[str]], records: Iterable[Record], domain: str
) -> EntityLexicon:
    """Index every joinable value; on a surface clash the dialogue's own domain wins, then any DB value."""
    ranked: dict[tuple[str, ...], tuple[int, str]] = {}
    global_slots: dict[tuple[str, ...], set[str]] = {}
    glue: set[str] = set()

    def offer(joined: str, rank: int) -> None:
        key = surface(joined)
        if len(key) > 1 and (key not in ranked or ranked[key][0] < rank):
            ranked[key] = (rank, joined)

    for slot, values in global_entities.items():
        for raw in values:
            joined = normalise_value(raw)
            if not joined or joined == "<dontknow>":
                continue
            global_slots.setdefault(surface(joined), set()).add(slot)
            if slot in ("phone", "postcode"):
                glue.add(joined)
            if slot != "choice":
                offer(joined, 1)
    for record in records:
        for attribute, value in record.fields.items():
            offer(value, 3 if record.domain == domain else 2)
            if attribute in ("phone", "postcode"):
                glue.add(value)
    for digit, word in _STAR_WORDS.items():
        for number in (digit, word):
            for tail in (" stars", " star", "-star", "-stars"):
                ranked[tuple(f"{number}{tail}".split())] = (4, f"{digit}_star")
    return EntityLexicon(
        phrases={key: joined for key, (_, joined) in ranked.items()},
        max_len=max((len(key) for key in ranked), default=1),
        global_slots={key: frozenset(slots) for key, slots in global_slots.items()},
        glue_values=frozenset(glue),
    )


def _glue_codes(tokens: list[str], known: frozenset[str]) -> list[str]:
    """Rejoin postcodes and phone numbers that the crowd workers typed with spaces or dots."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for width in range(min(7, len(tokens) - i), 1, -1):
            span = tokens[i : i + width]
            glued = "".join(span).replace(".", "").replace(",", "")
            is_phone = _PHONE.fullmatch(glued) is not None and all(t.isdigit() for t in span)
            is_postcode = _POSTCODE.fullmatch(glued) is not None and span[0].startswith("c")
            if glued in known or is_phone or is_postcode:
                out.append(glued)
                i += width
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def join_entities(tokens: Sequence[str], lexicon: EntityLexicon) -> list[str]:
    """Longest-first replacement of entity mentions by their joined form, on token boundaries."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        # Width 1 too: single-token spellings such as "4-star" are rewritten as well.
        for width in range(min(lexicon.max_len, len(tokens) - i), 0, -1):
            joined = lexicon.phrases.get(tuple(tokens[i : i + width]))
            if joined is not None:
                out.append(joined)
                i += width
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def restore_apostrophes(tokens: Sequence[str]) -> list[str]:
    out: list[str] = []
    for token in tokens:
        if (
            token in _CLITICS
            and out
            and out[-1].replace("_", "").isalpha()
            and (token != "t" or out[-1].endswith("n"))
        ):
            out.append("'")
        out.append(token)
    return out


def normalise_utterance(text: str, lexicon: EntityLexicon) -> str:
    """One GraphDialog utterance in DF-Net's token form (without the ``,`` and ``.`` GraphDialog dropped)."""
    tokens = _glue_codes(text.lower().split(), lexicon.glue_values)
    tokens = " ".join(_STRAY_PUNCT.sub(" ", t) if not t.isdigit() else t for t in tokens).split()
    tokens = restore_apostrophes(join_entities(tokens, lexicon))
    if tokens and tokens[-1] not in _FINAL_MARKS:
        tokens.append(".")
    return " ".join(tokens)


def _choice_counts(tokens: Sequence[str], i: int) -> bool:
    """EVALUATION.md's MWOZ rule for when a count word is an entity."""
    value = tokens[i]
    before = " ".join(tokens[max(0, i - 3) : i])
    after = " ".join(tokens[i + 1 : i + 4])
    if value in _CHOICE_NEVER:
        return False
    if value == "many":
        return not before.endswith("how") and not after.startswith(("other types", "food types", "cuisines"))
    if value == "all":
        return after.startswith(("of the ", "expensive", "moderate", "cheap")) or after == "of the"
    return _CHOICE_LEAD.search(before) is not None


def _is_reference(tokens: Sequence[str], i: int) -> bool:
    token = tokens[i]
    if not _REF_CODE.fullmatch(token) or token.isdigit():
        return False
    before = tokens[max(0, i - 6) : i]
    if any(c.isdigit() for c in token):
        return any(_REF_KEYWORD.match(t) for t in (*before, *tokens[i + 1 : i + 6]))
    # A letters-only code must follow the keyword and "is" / ":" / "number" directly, or words such as
    # "anything" and "reserved" would count.
    return bool(before) and before[-1] in _REF_LEADS and any(_REF_KEYWORD.match(t) for t in before)


def gold_entities(response: str, lexicon: EntityLexicon) -> tuple[str, ...]:
    """Entities of a normalised response, in order of first mention, each once."""
    tokens = response.split()
    found: list[str] = []
    for i, token in enumerate(tokens):
        if token in found:
            continue
        slots = lexicon.global_slots.get(surface(token))
        if slots is not None:
            if slots == {"choice"} and not _choice_counts(tokens, i):
                continue
            if token == "free" and i + 1 < len(tokens) and tokens[i + 1] in _FREE_NOT:
                continue
            found.append(token)
        elif _is_reference(tokens, i):
            found.append(token)
    return tuple(found)
