"""The runs ``run.py`` can make on a lent GPU, and how ``import_run.py`` names them in quality.md."""

from __future__ import annotations

from typing import NamedTuple


class Variant(NamedTuple):
    config: str  # the config under configs/, after the dataset's name
    overrides: tuple[str, ...]  # what makes the ablation
    label: str  # how a quality.md row names its training (import_run.py)


VARIANTS: dict[str, Variant] = {
    "prompt": Variant("condensed-prompt", (), "prompt, NLL + MML"),
    "prefix": Variant("condensed-prefix", (), "prefix, NLL + MML"),
    "ctr": Variant("condensed-ctr", (), "ctr (no tags, contrastive loss), NLL + MML + CTR"),
    "prompt-nll": Variant("condensed-prompt", ("loss.use_mml=false",), "prompt, NLL only (w/o MML)"),
    "none": Variant(
        "condensed-prompt",
        ("meta.mode=none", "meta.use_negative=false"),
        "no meta knowledge, NLL + MML (w/o meta knowledge)",
    ),
    "prompt-noneg": Variant(
        "condensed-prompt",
        ("meta.use_negative=false", "loss.mml_negative=false"),
        "prompt, NLL + MML without the negative",
    ),
}
