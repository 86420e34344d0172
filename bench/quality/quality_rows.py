"""The rows of quality.md's local section and the comparisons it states: which checkpoint or pipeline
file each row evaluates, how it was trained, and the paper's numbers beside them. Data only;
run_local.py evaluates and reports them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import NamedTuple


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    checkpoint: str  # a checkpoint folder or a pipeline file, relative to the repository
    dataset: str
    training: str  # how the generator was trained, with the command's config (or "none")
    # The training output folder (its log.jsonl feeds the dev-F1 plot); "" for a pipeline file over a
    # shipped adapter, or for a second evaluation of a run that another row already plots.
    train_run: str = ""
    split: str = "test"
    limit: int | None = 100  # None: the whole split
    batch_size: int = 8
    backbone: str = ""  # a seq2seq row's backbone (a key of BACKBONES); "" for the SmolLM2 rows
    options: tuple[str, ...] = ()  # more `mktod evaluate` options, e.g. ("--setting", "condensed")
    # The row this one trains again with the same command (only output_dir differs). A first run
    # measured on an earlier machine left no predictions behind; its retrained twin keeps them, so
    # every comparison of the first run is stated again with the twin, with an interval.
    rerun_of: str = ""


# configs/camrest-condensed-prompt-smollm2-cpu.yaml trains whole records (104 tokens, batch 2 x 2) since
# the record-budget row; the CamRest SmolLM2 rows trained before it ran with these values.
CAMREST_CPU = "mktod train --config configs/camrest-condensed-prompt-smollm2-cpu.yaml "
BUDGET_48 = "--set generator.max_record_tokens=48 --set optim.batch_size=4 --set optim.grad_accum=1 "
CAMREST_48 = f"{CAMREST_CPU}{BUDGET_48}"
# configs/mwoz-condensed-prompt-smollm2-cpu.yaml likewise trains whole records (96 tokens) since the
# MWOZ record-budget row; its condensed rows trained before it ran with 80.
MWOZ_CPU = "mktod train --config configs/mwoz-condensed-prompt-smollm2-cpu.yaml "
MWOZ_80 = f"{MWOZ_CPU}--set generator.max_record_tokens=80 "
# configs/camrest-large-prompt-smollm2-cpu.yaml trains whole records (104 tokens, batch 1 x 4: 7 whole
# records a turn) since its record-budget row; the large-scale rows trained before it ran with LARGE_48.
CAMREST_LARGE = "mktod train --config configs/camrest-large-prompt-smollm2-cpu.yaml "
WHOLE_LARGE = "--set generator.max_record_tokens=104 --set optim.batch_size=1 --set optim.grad_accum=4 "
# configs/mwoz-large-prompt-smollm2-cpu.yaml keeps 80 record tokens, as its first rows trained.
MWOZ_LARGE = "mktod train --config configs/mwoz-large-prompt-smollm2-cpu.yaml "
LARGE_48 = "--set generator.max_record_tokens=48 --set optim.batch_size=2 --set optim.grad_accum=2 "
# configs/smd-condensed-prompt-smollm2-cpu.yaml keeps 48 tokens (the whole-records row sets its own).
SMD_CPU = "mktod train --config configs/smd-condensed-prompt-smollm2-cpu.yaml "
DETACH_LABEL = "SmolLM2-135M + LoRA, prompt, NLL + MML with MML training the retriever only"
# The 240-turn adapter that mktod/pretrained/smollm2-camrest-lora shipped before the 448-turn pipeline;
# kept in bench/quality/adapters/smollm2-camrest-lora-r104 for the lora-warmup rows that read it.
R104_ADAPTER = (
    f"{CAMREST_CPU}"
    "--set output_dir=runs/camrest-condensed-prompt-smollm2-cpu-r104 (CPU, condensed KBs, whole records, "
    "60 steps x 4 turns; its step-60 checkpoint, the ft-prompt-mml-r104 row's generator, was the adapter "
    "shipped in mktod/pretrained/smollm2-camrest-lora before the 448-turn one, and is kept in "
    "bench/quality/adapters/smollm2-camrest-lora-r104)"
)
# The 448-turn recipe's record layout: each record read beside the context but hidden from the others,
# and MML's single-record likelihoods without dropout.
PARALLEL_LAYOUT = "--set generator.record_attention=parallel --set loss.mml_dropout=false "
# The 448-turn CamRest prompt run (README, "Training length"): its row, its as-served pipeline's row
# and the pipeline shipped in mktod/pretrained/smollm2-camrest-lora.
PAR448_RECIPE = (
    f"{PARALLEL_LAYOUT}"
    "--set optim.batch_size=2 --set optim.grad_accum=4 --set optim.max_steps=56 "
    "--set optim.eval_every=14 --set optim.save_every=7 "
)


def par448(base: str, output_dir: str, max_minutes: int, options: str = "") -> str:
    """The recipe's training command: ``base`` (a CPU config's command), then ``options``, the recipe,
    the run's output folder under runs/ and its --max-time."""
    return f"{base}{options}{PAR448_RECIPE}--set output_dir=runs/{output_dir} --max-time {max_minutes}"


PAR448 = par448(CAMREST_CPU, "camrest-condensed-prompt-smollm2-cpu-par448", 92)
# Its ablation without meta knowledge (so without the easy negative either), the same recipe.
PAR448_NONE = par448(
    CAMREST_CPU,
    "camrest-condensed-none-smollm2-cpu-par448",
    150,
    "--set meta.mode=none --set meta.use_negative=false ",
)
# Its ablation without MML (NLL only, so the retriever stays as warm-up left it), the same recipe.
PAR448_NLL = par448(
    CAMREST_CPU, "camrest-condensed-prompt-nll-smollm2-cpu-par448", 150, "--set loss.use_mml=false "
)
# The same recipe on SMD, whose config keeps records cut at 48 tokens (hence -r48 in its rows' names): with
# MML and without. The other SMD SmolLM2 rows train 120 turns (30 steps x 4, the config as it is).
SMD_PAR448 = par448(SMD_CPU, "smd-condensed-prompt-smollm2-cpu-par448", 75)
SMD_PAR448_NLL = par448(
    SMD_CPU, "smd-condensed-prompt-nll-smollm2-cpu-par448", 65, "--set loss.use_mml=false "
)
# The SMD config's own 120 turns (30 steps x 4) in that layout: what the layout does without the longer run.
SMD_PAR120 = f"{SMD_CPU}{PARALLEL_LAYOUT}--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-par120"
# The SMD config twice as long in its own causal layout (60 steps x 4), its checkpoint chosen on the first
# 80 dev turns instead of 40 (the 448-turn runs showed 40 too few to choose by).
C240 = "--set optim.max_steps=60 --set optim.eval_every=15 --set optim.eval_limit=80 "
SMD_C240 = f"{SMD_CPU}{C240}--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-c240"
# The same run with the user's last message restated after the records (generator.restate_user): the
# 240-turn runs closed first turns with "you are welcome", as if they no longer read a message ~300
# tokens back (bench/quality/reply_modes.py).
RESTATE = "--set generator.restate_user=true "
# The CamRest 448-turn recipe (PAR448) with the user's last message restated, as it lifted the 240-turn
# SMD run.
PAR448_RESTATE = par448(CAMREST_CPU, "camrest-condensed-prompt-smollm2-cpu-par448-restate", 120, RESTATE)
SMD_C240_RESTATE = (
    f"{SMD_CPU}{C240}{RESTATE}--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-c240-restate"
)
# The config's own 120 turns with the message restated.
SMD_RESTATE = f"{SMD_CPU}{RESTATE}--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-restate"
# Its ablation without MML.
SMD_C240_RESTATE_NLL = (
    f"{SMD_CPU}{C240}{RESTATE}"
    "--set loss.use_mml=false --set output_dir=runs/smd-condensed-prompt-nll-smollm2-cpu-c240-restate"
)
SHIPPED = (
    f"{PAR448}; "
    "mktod export-pipeline --checkpoint runs/camrest-condensed-prompt-smollm2-cpu-par448/best "
    "--out mktod/pretrained/smollm2-camrest-lora --retriever-bits 4 (CPU, 56 steps x 8 turns; the "
    "ft-prompt-mml-par448 row's generator, and its jointly trained retriever as a 4-bit delta over the "
    "bundled all-MiniLM-L6-v2)"
)


def on_whole_split(row: Row) -> Row:
    """``row`` scored again on the whole test split, as row NAME-all (train_run "": ``row`` plots the run)."""
    return replace(
        row, name=f"{row.name}-all", label=f"{row.label}, on the whole test split", train_run="", limit=None
    )


def at_last_step(row: Row, steps: int) -> Row:
    """``row``'s run scored at its last checkpoint (``steps`` optimiser steps) instead of the one its dev
    slice chose, as row NAME-last (train_run "": ``row`` plots the run)."""
    if not row.checkpoint.endswith("/best"):
        raise ValueError(f"row {row.name}: at_last_step needs a run's best/ checkpoint, got {row.checkpoint}")
    return replace(
        row,
        name=f"{row.name}-last",
        label=f"{row.label}, its last (step-{steps}) checkpoint",
        checkpoint=row.checkpoint.removesuffix("/best") + "/last",
        train_run="",
    )


# The 448-turn CamRest runs. Each is also scored on the whole test split (the first 100 turns are easier
# than the rest: shipped against shipped-all), which narrows its pairings' intervals.
PAR448_ROWS = (
    Row(
        "ft-prompt-mml-par448",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, whole records, 448 training turns in the parallel record "
        "layout",
        "runs/camrest-condensed-prompt-smollm2-cpu-par448/best",
        "camrest",
        f"{PAR448} (CPU, 56 steps x 8 turns, 72 min)",
        "runs/camrest-condensed-prompt-smollm2-cpu-par448",
    ),
    Row(
        "ft-none-mml-par448",
        "SmolLM2-135M + LoRA, no meta knowledge, NLL + MML, whole records, 448 training turns in the "
        "parallel record layout",
        "runs/camrest-condensed-none-smollm2-cpu-par448/best",
        "camrest",
        f"{PAR448_NONE} (CPU, 56 steps x 8 turns, 76 min, beside other jobs for its first 40)",
        "runs/camrest-condensed-none-smollm2-cpu-par448",
    ),
    Row(
        "ft-prompt-nll-par448",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML), whole records, 448 training turns in the "
        "parallel record layout",
        "runs/camrest-condensed-prompt-nll-smollm2-cpu-par448/best",
        "camrest",
        f"{PAR448_NLL} (CPU, 56 steps x 8 turns, 54 min)",
        "runs/camrest-condensed-prompt-nll-smollm2-cpu-par448",
    ),
)
# The 448-turn CamRest prompt run with the user's last message restated, also on the whole test split.
PAR448_RESTATE_ROWS = (
    Row(
        "ft-prompt-mml-par448-restate",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, whole records, 448 training turns in the parallel record "
        "layout, the user's last message restated after the records",
        "runs/camrest-condensed-prompt-smollm2-cpu-par448-restate/best",
        "camrest",
        f"{PAR448_RESTATE} (CPU, 56 steps x 8 turns, 102 min)",
        "runs/camrest-condensed-prompt-smollm2-cpu-par448-restate",
    ),
)
# The 448-turn SMD runs, also scored on the whole test split: on the first 100 turns alone MML's interval
# against NLL straddles 0.
SMD_PAR448_ROWS = (
    Row(
        "ft-prompt-mml-par448-r48",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, 448 training turns in the parallel record layout",
        "runs/smd-condensed-prompt-smollm2-cpu-par448/best",
        "smd",
        f"{SMD_PAR448} (CPU, 56 steps x 8 turns, 50 min)",
        "runs/smd-condensed-prompt-smollm2-cpu-par448",
    ),
    Row(
        "ft-prompt-nll-par448-r48",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML), 448 training turns in the parallel record layout",
        "runs/smd-condensed-prompt-nll-smollm2-cpu-par448/best",
        "smd",
        f"{SMD_PAR448_NLL} (CPU, 56 steps x 8 turns, 56 min, beside the scoring of another row for its "
        "first 27)",
        "runs/smd-condensed-prompt-nll-smollm2-cpu-par448",
    ),
)

# The 240-turn SMD run with the user's last message restated, with MML and without.
SMD_C240_RESTATE_ROWS = (
    Row(
        "ft-prompt-mml-c240-r48-restate",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, 240 training turns, the user's last message restated "
        "after the records",
        "runs/smd-condensed-prompt-smollm2-cpu-c240-restate/best",
        "smd",
        f"{SMD_C240_RESTATE} (CPU, 60 steps x 4 turns, 43 min)",
        "runs/smd-condensed-prompt-smollm2-cpu-c240-restate",
    ),
    Row(
        "ft-prompt-nll-c240-r48-restate",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML), 240 training turns, the user's last message "
        "restated after the records",
        "runs/smd-condensed-prompt-nll-smollm2-cpu-c240-restate/best",
        "smd",
        f"{SMD_C240_RESTATE_NLL} (CPU, 60 steps x 4 turns, 21 min)",
        "runs/smd-condensed-prompt-nll-smollm2-cpu-c240-restate",
    ),
)
ROWS = (
    Row(
        "zs-none",
        "SmolLM2-135M zero-shot, no meta knowledge",
        "configs/pipelines/camrest-smollm2-zeroshot-none.yaml",
        "camrest",
        "none",
    ),
    Row(
        "zs-prompt",
        "SmolLM2-135M zero-shot, prompt meta knowledge",
        "configs/pipelines/camrest-smollm2-zeroshot-prompt.yaml",
        "camrest",
        "none",
    ),
    Row(
        "ft-prompt-mml",
        "SmolLM2-135M + LoRA, prompt, NLL + MML",
        "runs/camrest-condensed-prompt-smollm2-cpu/best",
        "camrest",
        f"{CAMREST_48}(CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prompt-smollm2-cpu",
    ),
    Row(
        "ft-prompt-mml-rerun",
        "SmolLM2-135M + LoRA, prompt, NLL + MML (retrained)",
        "runs/camrest-condensed-prompt-smollm2-cpu-rerun/best",
        "camrest",
        f"{CAMREST_48}"
        "--set output_dir=runs/camrest-condensed-prompt-smollm2-cpu-rerun (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prompt-smollm2-cpu-rerun",
        rerun_of="ft-prompt-mml",
    ),
    Row(
        "ft-prompt-mml-r104",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, whole records (104-token record budget)",
        "runs/camrest-condensed-prompt-smollm2-cpu-r104/best",
        "camrest",
        f"{CAMREST_CPU}"
        "--set generator.max_record_tokens=104 --set optim.batch_size=2 --set optim.grad_accum=2 "
        "--set output_dir=runs/camrest-condensed-prompt-smollm2-cpu-r104 (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prompt-smollm2-cpu-r104",
    ),
    Row(
        "ft-none-mml-r104",
        "SmolLM2-135M + LoRA, no meta knowledge, NLL + MML, whole records (104-token record budget)",
        "runs/camrest-condensed-none-smollm2-cpu-r104/best",
        "camrest",
        f"{CAMREST_CPU}--set meta.mode=none "
        "--set meta.use_negative=false --set generator.max_record_tokens=104 --set optim.batch_size=2 "
        "--set optim.grad_accum=2 --set output_dir=runs/camrest-condensed-none-smollm2-cpu-r104 "
        "(CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-none-smollm2-cpu-r104",
    ),
    Row(
        "ft-prompt-mml-r104-detach",
        f"{DETACH_LABEL}, whole records (104-token record budget)",
        "runs/camrest-condensed-prompt-smollm2-cpu-detach/best",
        "camrest",
        f"{CAMREST_CPU}"
        "--set loss.detach_generator=true "
        "--set output_dir=runs/camrest-condensed-prompt-smollm2-cpu-detach (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prompt-smollm2-cpu-detach",
    ),
    Row(
        "ft-prompt-nll-r104",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML), whole records (104-token record budget)",
        "runs/camrest-condensed-prompt-smollm2-cpu-r104-nomml/best",
        "camrest",
        f"{CAMREST_CPU}--set loss.use_mml=false "
        "--set output_dir=runs/camrest-condensed-prompt-smollm2-cpu-r104-nomml (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prompt-smollm2-cpu-r104-nomml",
    ),
    Row(
        "ft-prompt-nll",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML)",
        "runs/camrest-condensed-prompt-smollm2-cpu-nomml/best",
        "camrest",
        f"{CAMREST_48}--set loss.use_mml=false "
        "--set output_dir=runs/camrest-condensed-prompt-smollm2-cpu-nomml (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prompt-smollm2-cpu-nomml",
    ),
    Row(
        "ft-none-mml",
        "SmolLM2-135M + LoRA, no meta knowledge, NLL + MML (w/o meta knowledge)",
        "runs/camrest-condensed-none-smollm2-cpu/best",
        "camrest",
        f"{CAMREST_48}--set meta.mode=none "
        "--set meta.use_negative=false --set output_dir=runs/camrest-condensed-none-smollm2-cpu "
        "(CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-none-smollm2-cpu",
    ),
    Row(
        "ft-ctr-mml",
        "SmolLM2-135M + LoRA, ctr (no tags, contrastive loss), NLL + MML + CTR",
        "runs/camrest-condensed-ctr-smollm2-cpu/best",
        "camrest",
        f"{CAMREST_48}--set meta.mode=none "
        "--set meta.use_negative=false --set loss.use_ctr=true "
        "--set output_dir=runs/camrest-condensed-ctr-smollm2-cpu (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-ctr-smollm2-cpu",
    ),
    Row(
        "ft-prompt-mml-noneg",
        "SmolLM2-135M + LoRA, prompt, NLL + MML without the negative in MML",
        "runs/camrest-condensed-prompt-smollm2-cpu-noneg/best",
        "camrest",
        f"{CAMREST_48}"
        "--set loss.mml_negative=false "
        "--set output_dir=runs/camrest-condensed-prompt-smollm2-cpu-noneg (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prompt-smollm2-cpu-noneg",
    ),
    Row(
        "ft-prefix-mml",
        "SmolLM2-135M + LoRA, prefix, NLL + MML",
        "runs/camrest-condensed-prefix-smollm2-cpu/best",
        "camrest",
        f"{CAMREST_48}--set meta.mode=prefix "
        "--set output_dir=runs/camrest-condensed-prefix-smollm2-cpu (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prefix-smollm2-cpu",
    ),
    Row(
        "ft-prefix-nll",
        "SmolLM2-135M + LoRA, prefix, NLL only (w/o MML)",
        "runs/camrest-condensed-prefix-smollm2-cpu-nomml/best",
        "camrest",
        f"{CAMREST_48}--set meta.mode=prefix "
        "--set loss.use_mml=false --set output_dir=runs/camrest-condensed-prefix-smollm2-cpu-nomml "
        "(CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prefix-smollm2-cpu-nomml",
    ),
    Row(
        "ft-prefix-nll-r104",
        "SmolLM2-135M + LoRA, prefix, NLL only (w/o MML), whole records (104-token record budget)",
        "runs/camrest-condensed-prefix-smollm2-cpu-r104-nomml/best",
        "camrest",
        f"{CAMREST_CPU}--set meta.mode=prefix --set loss.use_mml=false "
        "--set output_dir=runs/camrest-condensed-prefix-smollm2-cpu-r104-nomml (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prefix-smollm2-cpu-r104-nomml",
    ),
    Row(
        "ft-prefix-mml-r104",
        "SmolLM2-135M + LoRA, prefix, NLL + MML, whole records (104-token record budget)",
        "runs/camrest-condensed-prefix-smollm2-cpu-r104/best",
        "camrest",
        f"{CAMREST_CPU}--set meta.mode=prefix "
        "--set output_dir=runs/camrest-condensed-prefix-smollm2-cpu-r104 (CPU, 60 steps x 4 turns)",
        "runs/camrest-condensed-prefix-smollm2-cpu-r104",
    ),
    *PAR448_ROWS,
    *(on_whole_split(row) for row in PAR448_ROWS),
    *PAR448_RESTATE_ROWS,
    *(on_whole_split(row) for row in PAR448_RESTATE_ROWS),
    Row(
        "par448-as-served",
        "SmolLM2-135M + LoRA, the 448-turn run's adapter over the bundled all-MiniLM-L6-v2 as it comes "
        "(how the pipeline shipped before it was built), prompt",
        "runs/pipelines/camrest-par448-served",
        "camrest",
        f"{PAR448}; "
        "mktod export-pipeline --checkpoint runs/camrest-condensed-prompt-smollm2-cpu-par448/best "
        "--out runs/pipelines/camrest-par448-served --retriever encoder:all-MiniLM-L6-v2 "
        "(CPU, the ft-prompt-mml-par448 row's generator)",
    ),
    Row(
        "r104-as-served",
        "SmolLM2-135M + LoRA, the pipeline shipped before the 448-turn one, as it was served (its 240-turn "
        "adapter over the bundled all-MiniLM-L6-v2 as it comes), prompt",
        "bench/quality/adapters/smollm2-camrest-lora-r104",
        "camrest",
        f"{R104_ADAPTER}; mktod export-pipeline --checkpoint "
        "runs/camrest-condensed-prompt-smollm2-cpu-r104/best --out mktod/pretrained/smollm2-camrest-lora "
        "--retriever encoder:all-MiniLM-L6-v2",
    ),
    Row(
        "b2b-prompt-mml",
        "BERT2BERT (MiniLM) FiD, prompt, NLL + MML",
        "runs/camrest-condensed-prompt-cpu/best",
        "camrest",
        "mktod build-backbone --kind bert2bert --cross-attention random "
        "--out runs/backbones/bert2bert-minilm; "
        "mktod train --config configs/camrest-condensed-prompt-cpu.yaml (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-cpu",
        limit=None,
        batch_size=16,
        backbone="bert2bert",
    ),
    Row(
        "b2b-selfx-prompt-mml",
        "BERT2BERT (MiniLM, cross-attention copied from self-attention) FiD, prompt, NLL + MML",
        "runs/camrest-condensed-prompt-cpu-selfx/best",
        "camrest",
        "mktod build-backbone --kind bert2bert --cross-attention self "
        "--out runs/backbones/bert2bert-minilm-selfx; "
        "mktod train --config configs/camrest-condensed-prompt-cpu.yaml "
        "--set generator.model=runs/backbones/bert2bert-minilm-selfx "
        "--set output_dir=runs/camrest-condensed-prompt-cpu-selfx (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-cpu-selfx",
        limit=None,
        batch_size=16,
        backbone="bert2bert-selfx",
    ),
    Row(
        "t5-prompt-mml",
        "T5-small from scratch FiD, prompt, NLL + MML",
        "runs/camrest-condensed-prompt-t5-cpu/best",
        "camrest",
        "mktod build-backbone --kind t5-scratch --dataset camrest --size small --tokenizer unigram "
        "--tokenizer-texts dialogues "
        "--out runs/backbones/camrest-t5-small; "
        "mktod train --config configs/camrest-condensed-prompt-t5-cpu.yaml (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-t5-cpu",
        limit=None,
        batch_size=16,
        backbone="t5-scratch",
    ),
    Row(
        "b2b-prompt-nll",
        "BERT2BERT (MiniLM) FiD, prompt, NLL only (w/o MML)",
        "runs/camrest-condensed-prompt-cpu-nomml/best",
        "camrest",
        "mktod build-backbone --kind bert2bert --cross-attention random "
        "--out runs/backbones/bert2bert-minilm; "
        "mktod train --config configs/camrest-condensed-prompt-cpu.yaml --set loss.use_mml=false "
        "--set output_dir=runs/camrest-condensed-prompt-cpu-nomml (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-cpu-nomml",
        limit=None,
        batch_size=16,
        backbone="bert2bert",
    ),
    # The same two runs as trained before loss.mml_dropout existed: MML's likelihoods had dropout.
    Row(
        "b2b-prompt-mml-dropout",
        "BERT2BERT (MiniLM) FiD, prompt, NLL + MML with dropout in MML's likelihoods",
        "runs/camrest-condensed-prompt-cpu-mmldropout/best",
        "camrest",
        "mktod build-backbone --kind bert2bert --cross-attention random "
        "--out runs/backbones/bert2bert-minilm; "
        "mktod train --config configs/camrest-condensed-prompt-cpu.yaml --set loss.mml_dropout=true "
        "--set output_dir=runs/camrest-condensed-prompt-cpu-mmldropout (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-cpu-mmldropout",
        limit=None,
        batch_size=16,
        backbone="bert2bert",
    ),
    Row(
        "t5-prompt-mml-dropout",
        "T5-small from scratch FiD, prompt, NLL + MML with dropout in MML's likelihoods",
        "runs/camrest-condensed-prompt-t5-cpu-mmldropout/best",
        "camrest",
        "mktod build-backbone --kind t5-scratch --dataset camrest --size small --tokenizer unigram "
        "--tokenizer-texts dialogues "
        "--out runs/backbones/camrest-t5-small; "
        "mktod train --config configs/camrest-condensed-prompt-t5-cpu.yaml --set loss.mml_dropout=true "
        "--set output_dir=runs/camrest-condensed-prompt-t5-cpu-mmldropout (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-t5-cpu-mmldropout",
        limit=None,
        batch_size=16,
        backbone="t5-scratch",
    ),
    Row(
        "t5-bpe-prompt-mml-dropout",
        "T5-small from scratch with a BPE tokenizer learnt on its inputs, prompt, NLL + MML with dropout "
        "in MML's likelihoods",
        "runs/camrest-condensed-prompt-t5-cpu-bpe-mmldropout/best",
        "camrest",
        "mktod build-backbone --kind t5-scratch --dataset camrest --size small "
        "--out runs/backbones/camrest-t5-small-bpe; "
        "mktod train --config configs/camrest-condensed-prompt-t5-cpu.yaml "
        "--set generator.model=runs/backbones/camrest-t5-small-bpe --set loss.mml_dropout=true "
        "--set output_dir=runs/camrest-condensed-prompt-t5-cpu-bpe-mmldropout (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-t5-cpu-bpe-mmldropout",
        limit=None,
        batch_size=16,
        backbone="t5-scratch-bpe",
    ),
    Row(
        "t5-bpe-prompt-mml",
        "T5-small from scratch with a BPE tokenizer learnt on its inputs, prompt, NLL + MML",
        "runs/camrest-condensed-prompt-t5-cpu-bpe/best",
        "camrest",
        "mktod build-backbone --kind t5-scratch --dataset camrest --size small "
        "--out runs/backbones/camrest-t5-small-bpe; "
        "mktod train --config configs/camrest-condensed-prompt-t5-cpu.yaml "
        "--set generator.model=runs/backbones/camrest-t5-small-bpe "
        "--set output_dir=runs/camrest-condensed-prompt-t5-cpu-bpe (CPU, 400 steps x 8 turns)",
        "runs/camrest-condensed-prompt-t5-cpu-bpe",
        limit=None,
        batch_size=16,
        backbone="t5-scratch-bpe",
    ),
    Row(
        "lora-warmup-condensed",
        "SmolLM2-135M + LoRA (the 240-turn adapter shipped before) over the warm-up retriever, prompt",
        "configs/pipelines/camrest-large-smollm2-lora-prompt.yaml",
        "camrest",
        R104_ADAPTER,
        options=("--setting", "condensed", "--k", "6"),
    ),
    Row(
        "shipped",
        "SmolLM2-135M + LoRA, the shipped pipeline as `make run` and `mktod serve` use it (the 448-turn "
        "run's adapter and its jointly trained retriever, a 4-bit delta over the bundled all-MiniLM-L6-v2), "
        "prompt",
        "mktod/pretrained/smollm2-camrest-lora",
        "camrest",
        SHIPPED,
    ),
    Row(
        "shipped-norepeat4",
        "SmolLM2-135M + LoRA, the shipped pipeline as served, prompt, decoded with no repeated 4-gram "
        "(`--no-repeat-ngram 4`)",
        "mktod/pretrained/smollm2-camrest-lora",
        "camrest",
        SHIPPED,
        options=("--no-repeat-ngram", "4"),
    ),
    Row(
        "shipped-all",
        "SmolLM2-135M + LoRA, the shipped pipeline as served, prompt, on the whole test split",
        "mktod/pretrained/smollm2-camrest-lora",
        "camrest",
        SHIPPED,
        limit=None,
    ),
    Row(
        "lora-warmup-large",
        "SmolLM2-135M + LoRA (the 240-turn adapter shipped before) over the warm-up retriever, prompt",
        "configs/pipelines/camrest-large-smollm2-lora-prompt.yaml",
        "camrest",
        R104_ADAPTER,
    ),
    Row(
        "ft-large-prompt-mml",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, prompt, NLL + MML",
        "runs/camrest-large-prompt-smollm2-cpu/best",
        "camrest",
        f"{CAMREST_LARGE}{LARGE_48}(CPU, 60 steps x 4 turns, top-7 of the dataset-level KB)",
        "runs/camrest-large-prompt-smollm2-cpu",
    ),
    Row(
        "ft-large-ctr-mml",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, ctr (no tags, contrastive loss), "
        "NLL + MML + CTR",
        "runs/camrest-large-ctr-smollm2-cpu/best",
        "camrest",
        f"{CAMREST_LARGE}{LARGE_48}--set meta.mode=none "
        "--set meta.use_negative=false --set loss.use_ctr=true "
        "--set output_dir=runs/camrest-large-ctr-smollm2-cpu (CPU, 60 steps x 4 turns, top-7 of the "
        "dataset-level KB)",
        "runs/camrest-large-ctr-smollm2-cpu",
    ),
    Row(
        "ft-large-prompt-mml-r104",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, prompt, NLL + MML, whole records "
        "(104-token record budget)",
        "runs/camrest-large-prompt-smollm2-cpu-r104/best",
        "camrest",
        f"{CAMREST_LARGE}{WHOLE_LARGE}"
        "--set output_dir=runs/camrest-large-prompt-smollm2-cpu-r104 (CPU, 60 steps x 4 turns, top-7 of "
        "the dataset-level KB)",
        "runs/camrest-large-prompt-smollm2-cpu-r104",
    ),
    Row(
        "ft-large-prompt-nll-r104",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, prompt, NLL only (w/o MML), whole records "
        "(104-token record budget)",
        "runs/camrest-large-prompt-smollm2-cpu-r104-nomml/best",
        "camrest",
        f"{CAMREST_LARGE}{WHOLE_LARGE}--set loss.use_mml=false "
        "--set output_dir=runs/camrest-large-prompt-smollm2-cpu-r104-nomml (CPU, 60 steps x 4 turns, "
        "top-7 of the warm-up retriever over the dataset-level KB)",
        "runs/camrest-large-prompt-smollm2-cpu-r104-nomml",
    ),
    Row(
        "ft-large-ctr-mml-r104",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, ctr (no tags, contrastive loss), "
        "NLL + MML + CTR, whole records (104-token record budget)",
        "runs/camrest-large-ctr-smollm2-cpu-r104/best",
        "camrest",
        f"{CAMREST_LARGE}{WHOLE_LARGE}--set meta.mode=none "
        "--set meta.use_negative=false --set loss.use_ctr=true "
        "--set output_dir=runs/camrest-large-ctr-smollm2-cpu-r104 (CPU, 60 steps x 4 turns, top-7 of the "
        "dataset-level KB)",
        "runs/camrest-large-ctr-smollm2-cpu-r104",
    ),
    Row(
        "ft-large-none-mml-r104",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, no meta knowledge, NLL + MML, whole records "
        "(104-token record budget)",
        "runs/camrest-large-none-smollm2-cpu-r104/best",
        "camrest",
        f"{CAMREST_LARGE}{WHOLE_LARGE}--set meta.mode=none --set meta.use_negative=false "
        "--set output_dir=runs/camrest-large-none-smollm2-cpu-r104 (CPU, 60 steps x 4 turns, top-7 of the "
        "dataset-level KB)",
        "runs/camrest-large-none-smollm2-cpu-r104",
    ),
    Row(
        "ft-large-prompt-mml-noneg-r104",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, prompt, NLL + MML without the negative in "
        "MML, whole records (104-token record budget)",
        "runs/camrest-large-prompt-smollm2-cpu-r104-noneg/best",
        "camrest",
        f"{CAMREST_LARGE}{WHOLE_LARGE}--set loss.mml_negative=false "
        "--set output_dir=runs/camrest-large-prompt-smollm2-cpu-r104-noneg (CPU, 60 steps x 4 turns, "
        "top-7 of the dataset-level KB)",
        "runs/camrest-large-prompt-smollm2-cpu-r104-noneg",
    ),
    Row(
        "zs-prompt",
        "SmolLM2-135M zero-shot, prompt meta knowledge",
        "configs/pipelines/smd-smollm2-zeroshot-prompt.yaml",
        "smd",
        "none",
    ),
    Row(
        "zs-none",
        "SmolLM2-135M zero-shot, no meta knowledge",
        "configs/pipelines/smd-smollm2-zeroshot-none.yaml",
        "smd",
        "none",
    ),
    Row(
        "ft-prompt-mml",
        "SmolLM2-135M + LoRA, prompt, NLL + MML",
        "runs/smd-condensed-prompt-smollm2-cpu/best",
        "smd",
        f"{SMD_CPU}(CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prompt-smollm2-cpu",
    ),
    Row(
        "ft-prompt-mml-rerun",
        "SmolLM2-135M + LoRA, prompt, NLL + MML (retrained)",
        "runs/smd-condensed-prompt-smollm2-cpu-rerun/best",
        "smd",
        f"{SMD_CPU}--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-rerun (CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prompt-smollm2-cpu-rerun",
        rerun_of="ft-prompt-mml",
    ),
    Row(
        "ft-prompt-mml-noneg",
        "SmolLM2-135M + LoRA, prompt, NLL + MML without the negative in MML",
        "runs/smd-condensed-prompt-smollm2-cpu-noneg/best",
        "smd",
        f"{SMD_CPU}--set loss.mml_negative=false "
        "--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-noneg (CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prompt-smollm2-cpu-noneg",
    ),
    Row(
        "ft-prompt-mml-detach",
        DETACH_LABEL,
        "runs/smd-condensed-prompt-smollm2-cpu-detach/best",
        "smd",
        f"{SMD_CPU}--set loss.detach_generator=true "
        "--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-detach (CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prompt-smollm2-cpu-detach",
    ),
    Row(
        "ft-prompt-mml-r184",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, whole records (184-token record budget)",
        "runs/smd-condensed-prompt-smollm2-cpu-r184/best",
        "smd",
        f"{SMD_CPU}"
        "--set generator.max_record_tokens=184 --set optim.batch_size=1 --set optim.grad_accum=4 "
        "--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-r184 (CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prompt-smollm2-cpu-r184",
    ),
    Row(
        "ft-prompt-nll",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML)",
        "runs/smd-condensed-prompt-smollm2-cpu-nomml/best",
        "smd",
        f"{SMD_CPU}--set loss.use_mml=false "
        "--set output_dir=runs/smd-condensed-prompt-smollm2-cpu-nomml (CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prompt-smollm2-cpu-nomml",
    ),
    Row(
        "ft-none-mml",
        "SmolLM2-135M + LoRA, no meta knowledge, NLL + MML (w/o meta knowledge)",
        "runs/smd-condensed-none-smollm2-cpu/best",
        "smd",
        f"{SMD_CPU}--set meta.mode=none "
        "--set meta.use_negative=false --set output_dir=runs/smd-condensed-none-smollm2-cpu "
        "(CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-none-smollm2-cpu",
    ),
    Row(
        "ft-ctr-mml",
        "SmolLM2-135M + LoRA, ctr (no tags, contrastive loss), NLL + MML + CTR",
        "runs/smd-condensed-ctr-smollm2-cpu/best",
        "smd",
        f"{SMD_CPU}--set meta.mode=none "
        "--set meta.use_negative=false --set loss.use_ctr=true "
        "--set output_dir=runs/smd-condensed-ctr-smollm2-cpu (CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-ctr-smollm2-cpu",
    ),
    Row(
        "ft-prefix-mml",
        "SmolLM2-135M + LoRA, prefix, NLL + MML",
        "runs/smd-condensed-prefix-smollm2-cpu/best",
        "smd",
        f"{SMD_CPU}--set meta.mode=prefix "
        "--set output_dir=runs/smd-condensed-prefix-smollm2-cpu (CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prefix-smollm2-cpu",
    ),
    Row(
        "ft-prefix-nll",
        "SmolLM2-135M + LoRA, prefix, NLL only (w/o MML)",
        "runs/smd-condensed-prefix-smollm2-cpu-nomml/best",
        "smd",
        f"{SMD_CPU}--set meta.mode=prefix "
        "--set loss.use_mml=false --set output_dir=runs/smd-condensed-prefix-smollm2-cpu-nomml "
        "(CPU, 30 steps x 4 turns)",
        "runs/smd-condensed-prefix-smollm2-cpu-nomml",
    ),
    *SMD_PAR448_ROWS,
    *(on_whole_split(row) for row in SMD_PAR448_ROWS),
    # Both chose their step-28 checkpoint on 22 dev turns with entities: their last one, scored on the
    # same test turns, says whether that choice was worth making.
    *(at_last_step(row, 56) for row in SMD_PAR448_ROWS),
    Row(
        "ft-prompt-mml-c240-r48",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, 240 training turns, checkpoint chosen on 80 dev turns",
        "runs/smd-condensed-prompt-smollm2-cpu-c240/best",
        "smd",
        f"{SMD_C240} (CPU, 60 steps x 4 turns, 47 min)",
        "runs/smd-condensed-prompt-smollm2-cpu-c240",
    ),
    *SMD_C240_RESTATE_ROWS,
    *(on_whole_split(row) for row in SMD_C240_RESTATE_ROWS),
    Row(
        "ft-prompt-mml-restate",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, the user's last message restated after the records",
        "runs/smd-condensed-prompt-smollm2-cpu-restate/best",
        "smd",
        f"{SMD_RESTATE} (CPU, 30 steps x 4 turns, 16 min)",
        "runs/smd-condensed-prompt-smollm2-cpu-restate",
    ),
    Row(
        "ft-prompt-mml-par120-r48",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, 120 training turns in the parallel record layout",
        "runs/smd-condensed-prompt-smollm2-cpu-par120/best",
        "smd",
        f"{SMD_PAR120} (CPU, 30 steps x 4 turns, 15 min)",
        "runs/smd-condensed-prompt-smollm2-cpu-par120",
    ),
    Row(
        "b2b-selfx-prompt-mml",
        "BERT2BERT (MiniLM, cross-attention copied from self-attention) FiD, prompt, NLL + MML",
        "runs/smd-condensed-prompt-cpu/best",
        "smd",
        "mktod build-backbone --kind bert2bert --out runs/backbones/bert2bert-minilm; "
        "mktod train --config configs/smd-condensed-prompt-cpu.yaml (CPU, 400 steps x 8 turns)",
        "runs/smd-condensed-prompt-cpu",
        limit=None,
        batch_size=16,
        backbone="bert2bert-selfx",
    ),
    Row(
        "t5-prompt-mml",
        "T5-small from scratch FiD, prompt, NLL + MML",
        "runs/smd-condensed-prompt-t5-cpu/best",
        "smd",
        "mktod build-backbone --kind t5-scratch --dataset smd --size small --tokenizer unigram "
        "--tokenizer-texts dialogues "
        "--out runs/backbones/smd-t5-small; "
        "mktod train --config configs/smd-condensed-prompt-t5-cpu.yaml (CPU, 400 steps x 8 turns)",
        "runs/smd-condensed-prompt-t5-cpu",
        limit=None,
        batch_size=16,
        backbone="t5-scratch",
    ),
    Row(
        "t5-bpe-prompt-mml",
        "T5-small from scratch with a BPE tokenizer learnt on its inputs, prompt, NLL + MML",
        "runs/smd-condensed-prompt-t5-cpu-bpe/best",
        "smd",
        "mktod build-backbone --kind t5-scratch --dataset smd --size small "
        "--out runs/backbones/smd-t5-small-bpe; "
        "mktod train --config configs/smd-condensed-prompt-t5-cpu.yaml "
        "--set generator.model=runs/backbones/smd-t5-small-bpe "
        "--set output_dir=runs/smd-condensed-prompt-t5-cpu-bpe (CPU, 400 steps x 8 turns)",
        "runs/smd-condensed-prompt-t5-cpu-bpe",
        limit=None,
        batch_size=16,
        backbone="t5-scratch-bpe",
    ),
    Row(
        "zs-prompt",
        "SmolLM2-135M zero-shot, prompt meta knowledge",
        "configs/pipelines/mwoz-smollm2-zeroshot-prompt.yaml",
        "mwoz",
        "none",
    ),
    Row(
        "ft-prompt-mml",
        "SmolLM2-135M + LoRA, prompt, NLL + MML",
        "runs/mwoz-condensed-prompt-smollm2-cpu/best",
        "mwoz",
        f"{MWOZ_80}(CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu",
    ),
    Row(
        "ft-prompt-mml-rerun",
        "SmolLM2-135M + LoRA, prompt, NLL + MML (retrained)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-rerun/best",
        "mwoz",
        f"{MWOZ_80}--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-rerun (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-rerun",
        rerun_of="ft-prompt-mml",
    ),
    Row(
        "ft-prompt-mml-r96",
        "SmolLM2-135M + LoRA, prompt, NLL + MML, whole records (96-token record budget)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-r96/best",
        "mwoz",
        f"{MWOZ_CPU}--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-r96 (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-r96",
    ),
    Row(
        "ft-prompt-mml-rerun-large",
        "SmolLM2-135M + LoRA trained on condensed KBs (the retrained prompt run), prompt, NLL + MML",
        "runs/mwoz-condensed-prompt-smollm2-cpu-rerun/best",
        "mwoz",
        f"{MWOZ_80}--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-rerun (CPU, 30 steps x 4 turns)",
        # The paper's K = 7 on the dataset-level KB (it trained with the condensed KBs' 6). Its training
        # run is plotted once, under the condensed row.
        options=("--setting", "large", "--k", "7"),
    ),
    Row(
        "ft-large-prompt-mml",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, prompt, NLL + MML",
        "runs/mwoz-large-prompt-smollm2-cpu/best",
        "mwoz",
        f"{MWOZ_LARGE.rstrip()} (CPU, 30 steps x 4 turns, top-7 of the dataset-level KB)",
        "runs/mwoz-large-prompt-smollm2-cpu",
    ),
    Row(
        "ft-large-ctr-mml",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, ctr (no tags, contrastive loss), "
        "NLL + MML + CTR",
        "runs/mwoz-large-ctr-smollm2-cpu/best",
        "mwoz",
        f"{MWOZ_LARGE}--set meta.mode=none --set meta.use_negative=false --set loss.use_ctr=true "
        "--set output_dir=runs/mwoz-large-ctr-smollm2-cpu (CPU, 30 steps x 4 turns, top-7 of the "
        "dataset-level KB)",
        "runs/mwoz-large-ctr-smollm2-cpu",
    ),
    Row(
        "ft-large-none-mml",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, no meta knowledge, NLL + MML",
        "runs/mwoz-large-none-smollm2-cpu/best",
        "mwoz",
        f"{MWOZ_LARGE}--set meta.mode=none --set meta.use_negative=false "
        "--set output_dir=runs/mwoz-large-none-smollm2-cpu (CPU, 30 steps x 4 turns, top-7 of the "
        "dataset-level KB)",
        "runs/mwoz-large-none-smollm2-cpu",
    ),
    Row(
        "ft-large-prompt-nll",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, prompt, NLL only (w/o MML)",
        "runs/mwoz-large-prompt-smollm2-cpu-nomml/best",
        "mwoz",
        f"{MWOZ_LARGE}--set loss.use_mml=false --set output_dir=runs/mwoz-large-prompt-smollm2-cpu-nomml "
        "(CPU, 30 steps x 4 turns, top-7 of the dataset-level KB)",
        "runs/mwoz-large-prompt-smollm2-cpu-nomml",
    ),
    Row(
        "ft-large-prompt-mml-noneg",
        "SmolLM2-135M + LoRA trained on large-scale retrievals, prompt, NLL + MML without the negative in "
        "MML",
        "runs/mwoz-large-prompt-smollm2-cpu-noneg/best",
        "mwoz",
        f"{MWOZ_LARGE}--set loss.mml_negative=false "
        "--set output_dir=runs/mwoz-large-prompt-smollm2-cpu-noneg (CPU, 30 steps x 4 turns, top-7 of "
        "the dataset-level KB)",
        "runs/mwoz-large-prompt-smollm2-cpu-noneg",
    ),
    Row(
        "ft-prompt-nll",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-nomml/best",
        "mwoz",
        f"{MWOZ_80}--set loss.use_mml=false "
        "--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-nomml (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-nomml",
    ),
    Row(
        "ft-prompt-mml-noneg",
        "SmolLM2-135M + LoRA, prompt, NLL + MML without the negative in MML",
        "runs/mwoz-condensed-prompt-smollm2-cpu-noneg/best",
        "mwoz",
        f"{MWOZ_80}--set loss.mml_negative=false "
        "--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-noneg (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-noneg",
    ),
    Row(
        "ft-none-mml",
        "SmolLM2-135M + LoRA, no meta knowledge, NLL + MML (w/o meta knowledge)",
        "runs/mwoz-condensed-none-smollm2-cpu/best",
        "mwoz",
        f"{MWOZ_80}--set meta.mode=none "
        "--set meta.use_negative=false --set output_dir=runs/mwoz-condensed-none-smollm2-cpu "
        "(CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-none-smollm2-cpu",
    ),
    Row(
        "ft-ctr-mml",
        "SmolLM2-135M + LoRA, ctr (no tags, contrastive loss), NLL + MML + CTR",
        "runs/mwoz-condensed-ctr-smollm2-cpu/best",
        "mwoz",
        f"{MWOZ_80}--set meta.mode=none "
        "--set meta.use_negative=false --set loss.use_ctr=true "
        "--set output_dir=runs/mwoz-condensed-ctr-smollm2-cpu (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-ctr-smollm2-cpu",
    ),
    Row(
        "ft-prefix-mml",
        "SmolLM2-135M + LoRA, prefix, NLL + MML",
        "runs/mwoz-condensed-prefix-smollm2-cpu/best",
        "mwoz",
        f"{MWOZ_80}--set meta.mode=prefix "
        "--set output_dir=runs/mwoz-condensed-prefix-smollm2-cpu (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prefix-smollm2-cpu",
    ),
    Row(
        "ft-prefix-nll",
        "SmolLM2-135M + LoRA, prefix, NLL only (w/o MML)",
        "runs/mwoz-condensed-prefix-smollm2-cpu-nomml/best",
        "mwoz",
        f"{MWOZ_80}--set meta.mode=prefix --set loss.use_mml=false "
        "--set output_dir=runs/mwoz-condensed-prefix-smollm2-cpu-nomml (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prefix-smollm2-cpu-nomml",
    ),
    Row(
        "ft-prompt-mml-detach",
        DETACH_LABEL,
        "runs/mwoz-condensed-prompt-smollm2-cpu-detach/best",
        "mwoz",
        f"{MWOZ_80}--set loss.detach_generator=true "
        "--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-detach (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-detach",
    ),
    Row(
        "ft-prompt-mml-r96-detach",
        f"{DETACH_LABEL}, whole records (96-token record budget)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-r96-detach/best",
        "mwoz",
        f"{MWOZ_CPU}"
        "--set loss.detach_generator=true "
        "--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-r96-detach (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-r96-detach",
    ),
    Row(
        "ft-prompt-nll-r96",
        "SmolLM2-135M + LoRA, prompt, NLL only (w/o MML), whole records (96-token record budget)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-r96-nomml/best",
        "mwoz",
        f"{MWOZ_CPU}--set loss.use_mml=false "
        "--set output_dir=runs/mwoz-condensed-prompt-smollm2-cpu-r96-nomml (CPU, 30 steps x 4 turns)",
        "runs/mwoz-condensed-prompt-smollm2-cpu-r96-nomml",
    ),
)

# METHOD.md §7, condensed KB (Entity F1 / BLEU).
PAPER = {
    "camrest": [
        ("MK-TOD prompt (T5-Base)", 72.09, 25.00),
        ("MK-TOD prefix (T5-Base)", 72.43, 26.39),
        ("ChatGPT + MK-TOD prompt", 56.83, 16.07),
        ("CDNet (no pre-training)", 62.90, 17.80),
        ("FG2Seq (no pre-training)", 66.40, 20.20),
    ],
    "smd": [
        ("MK-TOD prompt (T5-Base)", 68.28, 23.54),
        ("MK-TOD prefix (T5-Base)", 68.60, 23.96),
        ("ChatGPT + MK-TOD prompt", 59.72, 15.24),
        ("CDNet (no pre-training)", 68.60, 21.80),
        ("FG2Seq (no pre-training)", 61.10, 16.80),
    ],
    "mwoz": [
        ("MK-TOD prompt (T5-Base)", 52.42, 17.05),
        ("MK-TOD prefix (T5-Base)", 51.99, 16.97),
        ("ChatGPT + MK-TOD prompt", 35.84, 7.58),
        ("CDNet (no pre-training)", 38.70, 11.90),
        ("FG2Seq (no pre-training)", 36.50, 14.60),
    ],
}
# METHOD.md §7, large-scale KB (Entity F1 / BLEU / Recall@7).
PAPER_LARGE = {
    "camrest": [
        ("Q-TOD (T5-Large)", 63.88, 21.44, 95.52),
        ("MK-TOD prompt (T5-Base)", 71.67, 26.69, 92.24),
        ("MK-TOD ctr (T5-Base)", 73.51, 26.85, 93.88),
    ],
    "mwoz": [
        ("Q-TOD (T5-Large)", 46.74, 15.52, 92.97),
        ("MK-TOD prompt (T5-Base)", 50.69, 17.56, 92.74),
        ("MK-TOD ctr (T5-Base)", 51.35, 15.96, 92.74),
    ],
}
DATASET_NAMES = {"camrest": "CamRest", "smd": "SMD", "mwoz": "MultiWOZ 2.1"}

BACKBONES = {
    "bert2bert": "the BERT2BERT backbone warm-started from MiniLM",
    "bert2bert-selfx": "the BERT2BERT backbone warm-started from MiniLM, its cross-attention a copy of "
    "its self-attention (`build-backbone --cross-attention self`)",
    "t5-scratch": "a T5-small trained from scratch (a unigram tokenizer learnt on the training dialogues, "
    "`build-backbone --tokenizer unigram --tokenizer-texts dialogues`)",
    "t5-scratch-bpe": "a T5-small trained from scratch (a BPE tokenizer learnt on what the generator reads "
    "in the training split, `build-backbone`'s default)",
}
# What each backbone has to learn before it can copy values from its records: why a short run of it
# says little about the method.
BACKBONE_START = {
    "bert2bert": "Its decoder's cross-attention starts random, and all-MiniLM-L6-v2 was trained for "
    "sentence embeddings, not language modelling.",
    "bert2bert-selfx": "Its decoder's cross-attention starts as a copy of its self-attention, so it reads "
    "the encoder from the first step; its language-model head is still new (all-MiniLM-L6-v2 was trained "
    "for sentence embeddings).",
    "t5-scratch": "Every weight starts random: it learns the language from the training split itself "
    "before it can learn to read the records, and its tokenizer cuts every record at the 48-token budget "
    "(bench/results/tokenizer).",
    "t5-scratch-bpe": "Every weight starts random: it learns the language from the training split itself "
    "before it can learn to read the records.",
}


KB_ROWS = {"camrest": 7, "mwoz": 7}  # rows of every condensed KB (SMD's vary, at most 8 = its k)


class Pairing(NamedTuple):
    """A comparison quality.md states when both rows are there (the first run minus the second)."""

    first: str  # row names
    second: str
    topic: str  # what is compared, as the sentence and the closing summary name it
    detail: str  # what is held fixed
    name_a: str  # how the sentence names each run
    name_b: str
    model: str = "SmolLM2"  # the generator both runs train, as the sentence names it


SAME_SEED = "same data, steps and seed"
FROM_SCRATCH_TOKENIZERS = (  # how a from-scratch tokenizer pairing names its two runs
    "BPE learnt on the generator's inputs (`--tokenizer bpe --tokenizer-texts inputs`, the default)",
    "unigram learnt on the dialogues (`--tokenizer unigram --tokenizer-texts dialogues`), which "
    "cuts every record at the 48-token budget",
)
SAME_STEPS = "NLL + MML, same steps"
# How the CamRest record-budget pairings name their two budgets, and what the whole-records ones hold fixed.
WHOLE_104 = "104 tokens a record (none cut)"
CUT_48 = "48 (a CamRest record cut after its location or address)"
CUT_48_PLAIN = (  # the same budget over records without tags (meta.mode: none)
    "48 (without tags a record keeps its area and mostly its food, never its phone, postcode or price range)"
)
WHOLE_SAME_SEED = "whole records (104 tokens), the same data, steps and seed"
LARGE_WHOLE_MML = (
    "trained and scored on the dataset-level KB, whole records (104 tokens), NLL + MML, the same data, "
    "steps and seed"
)
LARGE_MML = "trained and scored on the dataset-level KB, NLL + MML, the same data, steps and seed"
DETACH_RUNS = (  # how an MML's-gradient pairing names its two runs
    "MML trains the generator and the retriever (the default)",
    "the retriever only (`loss.detach_generator: true`; the generator learns from NLL alone)",
)
PAR448_TURNS = "448 training turns in the parallel record layout, the same data order and seed"
PAR448_SAME = f"whole records, {PAR448_TURNS}"


def par448_length(first: str, second: str, records: str, shorter: str) -> Pairing:
    """A 448-turn prompt run (``first``) against the shorter run of its config (``second``, ``shorter``
    turns): the same data order and seed, with ``records`` (how its records were budgeted) in common."""
    return Pairing(
        first,
        second,
        "training length",
        f"prompt, NLL + MML, {records}, the same data order and seed; the longer run also reads its "
        "records in the parallel layout and computes MML's likelihoods without dropout",
        "448 turns (56 x 8)",
        shorter,
    )


PAIRINGS = (
    Pairing("ft-prompt-mml", "ft-prompt-nll", "prompt ablation", SAME_SEED, "with MML", "without MML"),
    Pairing("ft-prefix-mml", "ft-prefix-nll", "prefix ablation", SAME_SEED, "with MML", "without MML"),
    Pairing("ft-prompt-mml", "ft-prefix-mml", "meta-knowledge rendering", SAME_STEPS, "prompt", "prefix"),
    Pairing(
        "ft-prompt-mml",
        "ft-none-mml",
        "meta-knowledge ablation",
        SAME_SEED,
        "prompt meta knowledge",
        "the records alone (`meta.mode: none`; no tags, so no easy negative either)",
    ),
    Pairing(
        "ft-ctr-mml",
        "ft-none-mml",
        "contrastive loss",
        SAME_SEED,
        "with CTR (METHOD.md §3)",
        "without (`loss.use_ctr: false`)",
    ),
    Pairing(
        "ft-prompt-mml",
        "ft-prompt-mml-noneg",
        "easy negative",
        SAME_STEPS,
        "negative in the MML set (METHOD.md §4, the default)",
        "MML over the retrieved records only (`loss.mml_negative: false`)",
    ),
    Pairing(
        "ft-large-ctr-mml",
        "ft-large-prompt-mml",
        "large-scale meta knowledge",
        LARGE_MML,
        "ctr (no tags; the contrastive loss, METHOD.md §3)",
        "prompt meta knowledge",
    ),
    Pairing(
        "ft-prefix-mml-r104",
        "ft-prefix-nll-r104",
        "prefix ablation",
        WHOLE_SAME_SEED,
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-prompt-mml-r104",
        "ft-prefix-mml-r104",
        "meta-knowledge rendering",
        "whole records (104 tokens), NLL + MML, the same data, steps and seed",
        "prompt",
        "prefix",
    ),
    Pairing(
        "ft-prefix-mml-r104",
        "ft-prefix-mml",
        "record budget",
        "prefix, NLL + MML, the same data, steps and seed; 2 x 2 turns a step against 4 x 1",
        WHOLE_104,
        CUT_48,
    ),
    Pairing(
        "ft-prefix-nll-r104",
        "ft-prefix-nll",
        "record budget",
        "prefix, NLL only, the same data, steps and seed; 2 x 2 turns a step against 4 x 1",
        WHOLE_104,
        CUT_48,
    ),
    Pairing(
        "ft-large-ctr-mml-r104",
        "ft-large-prompt-mml-r104",
        "large-scale meta knowledge",
        LARGE_WHOLE_MML,
        "ctr (no tags; the contrastive loss, METHOD.md §3)",
        "prompt meta knowledge",
    ),
    Pairing(
        "ft-large-ctr-mml-r104",
        "ft-large-ctr-mml",
        "large-scale record budget",
        "trained and scored on the dataset-level KB, ctr, NLL + MML + CTR, the same data, steps and seed; "
        "1 x 4 turns a step against 2 x 2",
        WHOLE_104,
        CUT_48_PLAIN,
    ),
    Pairing(
        "ft-large-prompt-mml-r104",
        "ft-large-none-mml-r104",
        "large-scale meta-knowledge ablation",
        LARGE_WHOLE_MML,
        "prompt meta knowledge",
        "the records alone (`meta.mode: none`; no tags, so no easy negative either)",
    ),
    Pairing(
        "ft-large-ctr-mml-r104",
        "ft-large-none-mml-r104",
        "large-scale contrastive loss",
        LARGE_WHOLE_MML,
        "with CTR (METHOD.md §3)",
        "without (`loss.use_ctr: false`)",
    ),
    Pairing(
        "ft-large-prompt-mml-r104",
        "ft-large-prompt-mml-noneg-r104",
        "large-scale easy negative",
        LARGE_WHOLE_MML,
        "negative in the MML set (METHOD.md §4, the default)",
        "MML over the retrieved records only (`loss.mml_negative: false`)",
    ),
    Pairing(
        "ft-large-prompt-mml",
        "ft-large-none-mml",
        "large-scale meta-knowledge ablation",
        LARGE_MML,
        "prompt meta knowledge",
        "the records alone (`meta.mode: none`; no tags, so no easy negative either)",
    ),
    Pairing(
        "ft-large-ctr-mml",
        "ft-large-none-mml",
        "large-scale contrastive loss",
        LARGE_MML,
        "with CTR (METHOD.md §3)",
        "without (`loss.use_ctr: false`)",
    ),
    Pairing(
        "ft-large-prompt-mml",
        "ft-large-prompt-mml-noneg",
        "large-scale easy negative",
        LARGE_MML,
        "negative in the MML set (METHOD.md §4, the default)",
        "MML over the retrieved records only (`loss.mml_negative: false`)",
    ),
    Pairing(
        "ft-large-prompt-mml",
        "ft-large-prompt-nll",
        "large-scale prompt ablation",
        "trained and scored on the dataset-level KB, the same data, steps and seed",
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-large-prompt-mml-r104",
        "ft-large-prompt-nll-r104",
        "large-scale prompt ablation",
        "trained and scored on the dataset-level KB, whole records (104 tokens), the same data, steps "
        "and seed",
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-large-prompt-mml-r104",
        "ft-large-prompt-mml",
        "large-scale record budget",
        "trained and scored on the dataset-level KB, prompt, NLL + MML, the same data, steps and seed; "
        "1 x 4 turns a step against 2 x 2",
        WHOLE_104,
        CUT_48,
    ),
    Pairing(
        "ft-prompt-mml-r104",
        "ft-prompt-mml",
        "record budget",
        "prompt, NLL + MML, the same data, steps and seed; 2 x 2 turns a step against 4 x 1",
        WHOLE_104,
        "48 (a CamRest record cut after its location or address: its food, phone, postcode and "
        "price range never shown)",
    ),
    par448_length("ft-prompt-mml-par448", "ft-prompt-mml-r104", "whole records", "240 turns (60 x 4)"),
    Pairing(
        "ft-prompt-mml-par448",
        "ft-none-mml-par448",
        "meta-knowledge ablation",
        PAR448_SAME,
        "prompt meta knowledge",
        "the records alone (`meta.mode: none`; no tags, so no easy negative either)",
    ),
    Pairing(
        "ft-prompt-mml-par448",
        "ft-prompt-nll-par448",
        "prompt ablation",
        PAR448_SAME,
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-prompt-mml-par448-all",
        "ft-none-mml-par448-all",
        "meta-knowledge ablation",
        f"{PAR448_SAME}, the whole test split",
        "prompt meta knowledge",
        "the records alone (`meta.mode: none`; no tags, so no easy negative either)",
    ),
    Pairing(
        "ft-prompt-mml-par448-all",
        "ft-prompt-nll-par448-all",
        "prompt ablation",
        f"{PAR448_SAME}, the whole test split",
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-prompt-mml-par448-restate",
        "ft-prompt-mml-par448",
        "restated message",
        f"prompt, NLL + MML, {PAR448_SAME}",
        "the user's last message restated after the records",
        "the context alone",
    ),
    Pairing(
        "ft-prompt-mml-par448-restate-all",
        "ft-prompt-mml-par448-all",
        "restated message",
        f"prompt, NLL + MML, {PAR448_SAME}, the whole test split",
        "the user's last message restated after the records",
        "the context alone",
    ),
    Pairing(
        "ft-prompt-mml-par448-r48",
        "ft-prompt-nll-par448-r48",
        "prompt ablation",
        f"records cut at 48 tokens, {PAR448_TURNS}",
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-prompt-mml-par448-r48-all",
        "ft-prompt-nll-par448-r48-all",
        "prompt ablation",
        f"records cut at 48 tokens, {PAR448_TURNS}, the whole test split",
        "with MML",
        "without MML",
    ),
    *(
        Pairing(
            f"{run}-last",
            run,
            "checkpoint choice",
            f"the 448-turn run {loss}, records cut at 48 tokens",
            "its last checkpoint (step 56)",
            "the step-28 checkpoint its first 40 dev turns chose",
        )
        for run, loss in (
            ("ft-prompt-mml-par448-r48", "with MML"),
            ("ft-prompt-nll-par448-r48", "without MML"),
        )
    ),
    par448_length(
        "ft-prompt-mml-par448-r48", "ft-prompt-mml-rerun", "records cut at 48 tokens", "120 turns (30 x 4)"
    ),
    # Which half of the recipe the SMD result comes from: the layout alone at the config's 120 turns,
    # then the length alone in that layout.
    Pairing(
        "ft-prompt-mml-par120-r48",
        "ft-prompt-mml-rerun",
        "record layout",
        "prompt, NLL + MML, records cut at 48 tokens, 120 turns (30 x 4), the same data order and seed; "
        "the parallel run also computes MML's likelihoods without dropout",
        "parallel (each record hidden from the others)",
        "causal (the config's)",
    ),
    Pairing(
        "ft-prompt-mml-par448-r48",
        "ft-prompt-mml-par120-r48",
        "training length",
        "prompt, NLL + MML, records cut at 48 tokens, the parallel record layout without dropout in MML's "
        "likelihoods, the same data order and seed",
        "448 turns (56 x 8)",
        "120 turns (30 x 4)",
    ),
    Pairing(
        "ft-prompt-mml-c240-r48",
        "ft-prompt-mml-rerun",
        "training length",
        "prompt, NLL + MML, records cut at 48 tokens, the causal record layout, the same data order and "
        "seed; the longer run chose its checkpoint on the first 80 dev turns, the shorter on 40",
        "240 turns (60 x 4)",
        "120 turns (30 x 4)",
    ),
    Pairing(
        "ft-prompt-mml-c240-r48-restate",
        "ft-prompt-mml-c240-r48",
        "restated message",
        "prompt, NLL + MML, 240 turns in the causal record layout, records cut at 48 tokens, the same data "
        "order and seed, each checkpoint chosen on the first 80 dev turns",
        "the user's last message restated after the records",
        "the context alone",
    ),
    Pairing(
        "ft-prompt-mml-c240-r48-restate",
        "ft-prompt-nll-c240-r48-restate",
        "prompt ablation",
        "records cut at 48 tokens, 240 turns (60 x 4) in the causal record layout with the user's last "
        "message restated, the same data order and seed, each checkpoint chosen on the first 80 dev turns",
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-prompt-mml-restate",
        "ft-prompt-mml-rerun",
        "restated message",
        "prompt, NLL + MML, 120 turns (30 x 4) in the causal record layout, records cut at 48 tokens, the "
        "same data order and seed, each checkpoint chosen on the first 40 dev turns",
        "the user's last message restated after the records",
        "the context alone",
    ),
    Pairing(
        "ft-prompt-mml-c240-r48-restate",
        "ft-prompt-mml-restate",
        "training length",
        "prompt, NLL + MML, records cut at 48 tokens, the causal record layout with the user's last message "
        "restated, the same data order and seed; the longer run chose its checkpoint on the first 80 dev "
        "turns, the shorter on 40",
        "240 turns (60 x 4)",
        "120 turns (30 x 4)",
    ),
    Pairing(
        "ft-prompt-mml-c240-r48-restate",
        "ft-prompt-mml-rerun",
        "best run",
        "prompt, NLL + MML, records cut at 48 tokens, the causal record layout, the same data order and "
        "seed; the first trains twice as long (its checkpoint chosen on 80 dev turns, the other's on 40)",
        "240 turns with the user's last message restated",
        "120 turns with the context alone",
    ),
    Pairing(
        "ft-prompt-mml-c240-r48-restate-all",
        "ft-prompt-nll-c240-r48-restate-all",
        "prompt ablation",
        "records cut at 48 tokens, 240 turns (60 x 4) in the causal record layout with the user's last "
        "message restated, the same data order and seed, on the whole test split",
        "with MML",
        "without MML",
    ),
    Pairing(
        "par448-as-served",
        "r104-as-served",
        "served adapter",
        "each over the bundled all-MiniLM-L6-v2 as it comes, as the pipeline shipped before the 448-turn "
        "one was built, greedy",
        "the 448-turn run's adapter",
        "the 240-turn adapter shipped before",
    ),
    Pairing(
        "shipped",
        "par448-as-served",
        "served retriever",
        "the 448-turn run's adapter, greedy",
        "its jointly trained retriever as a 4-bit delta over all-MiniLM-L6-v2 (the shipped pipeline)",
        "the bundled all-MiniLM-L6-v2 as it comes",
    ),
    Pairing(
        "ft-prompt-mml-r96",
        "ft-prompt-mml",
        "record budget",
        "prompt, NLL + MML, the same data, steps and seed",
        "96 tokens a record (none cut)",
        "80 (the config's earlier budget, which cuts 11.67% of these test turns' records, the longest "
        "at 87 tokens)",
    ),
    Pairing(
        "ft-prompt-mml-r184",
        "ft-prompt-mml",
        "record budget",
        "prompt, NLL + MML, the same data, steps and seed; 1 x 4 turns a step against 2 x 2",
        "184 tokens a record (none cut)",
        "48 (the config's budget, which cuts 44.6% of the test split's records: its weather reports "
        "after a day or two, some addresses)",
    ),
    Pairing(
        "ft-none-mml-r104",
        "ft-none-mml",
        "record budget",
        "no meta knowledge, NLL + MML, the same data, steps and seed; 2 x 2 turns a step against 4 x 1",
        WHOLE_104,
        CUT_48_PLAIN,
    ),
    Pairing(
        "ft-prompt-mml-r104",
        "ft-none-mml-r104",
        "meta-knowledge ablation",
        WHOLE_SAME_SEED,
        "prompt meta knowledge",
        "the records alone (`meta.mode: none`; no tags, so no easy negative either)",
    ),
    Pairing(
        "ft-prompt-mml",
        "ft-prompt-mml-detach",
        "MML's gradient",
        SAME_SEED,
        *DETACH_RUNS,
    ),
    Pairing(
        "ft-prompt-mml-r104",
        "ft-prompt-nll-r104",
        "prompt ablation",
        WHOLE_SAME_SEED,
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-prompt-mml-r96",
        "ft-prompt-nll-r96",
        "prompt ablation",
        "whole records (96 tokens), the same data, steps and seed",
        "with MML",
        "without MML",
    ),
    Pairing(
        "ft-prompt-mml-r96",
        "ft-prompt-mml-r96-detach",
        "MML's gradient",
        "whole records (96 tokens), the same data, steps and seed",
        *DETACH_RUNS,
    ),
    Pairing(
        "ft-prompt-mml-r104",
        "ft-prompt-mml-r104-detach",
        "MML's gradient",
        WHOLE_SAME_SEED,
        *DETACH_RUNS,
    ),
    Pairing(
        "t5-bpe-prompt-mml-dropout",
        "t5-prompt-mml-dropout",
        "from-scratch tokenizer",
        "prompt, NLL + MML with dropout in MML's likelihoods, the same data, steps and seed",
        *FROM_SCRATCH_TOKENIZERS,
        "T5 FiD",
    ),
    Pairing(
        "t5-bpe-prompt-mml",
        "t5-prompt-mml",
        "from-scratch tokenizer",
        "prompt, NLL + MML, the same data, steps and seed",
        *FROM_SCRATCH_TOKENIZERS,
        "T5 FiD",
    ),
    Pairing(
        "b2b-prompt-mml",
        "b2b-prompt-nll",
        "prompt ablation",
        SAME_SEED,
        "with MML",
        "without MML",
        "BERT2BERT FiD",
    ),
    Pairing(
        "b2b-selfx-prompt-mml",
        "b2b-prompt-mml",
        "cross-attention initialisation",
        SAME_SEED,
        "copied from self-attention",
        "random",
        "BERT2BERT FiD",
    ),
)


BACKBONE_PAIRS = (  # the seq2seq backbones, from-scratch first
    ("t5-prompt-mml", "b2b-prompt-mml"),
    ("t5-prompt-mml", "b2b-selfx-prompt-mml"),  # the BERT2BERT default since 2026-12-02 (SMD's row)
    ("t5-prompt-mml-dropout", "b2b-prompt-mml-dropout"),
    ("t5-bpe-prompt-mml-dropout", "b2b-prompt-mml-dropout"),
    ("t5-bpe-prompt-mml", "b2b-selfx-prompt-mml"),
)
# The same seq2seq run with MML's likelihoods computed without dropout (loss.mml_dropout false, the
# default) and with it (before the option existed), the fixed run first.
DROPOUT_PAIRS = (
    ("b2b-prompt-mml", "b2b-prompt-mml-dropout"),
    ("t5-prompt-mml", "t5-prompt-mml-dropout"),
    ("t5-bpe-prompt-mml", "t5-bpe-prompt-mml-dropout"),
)


class SettingPair(NamedTuple):
    """Two rows that differ in a KB setting, and what the sentence says the second run is."""

    first: str
    second: str
    parts: str


# The same trained parts scored on each dialogue's own KB and on the dataset-level KB, condensed first.
SETTING_PAIRS = (
    SettingPair("lora-warmup-condensed", "lora-warmup-large", "the same generator and warm-up retriever"),
    SettingPair(
        "ft-prompt-mml-rerun",
        "ft-prompt-mml-rerun-large",
        "the same fine-tuned generator and its jointly trained retriever",
    ),
)
# The same generator config trained on large-scale retrievals and on condensed ones, both scored on the
# dataset-level KB: the large-scale-trained run first.
TRAIN_SETTING_PAIRS = (
    SettingPair(
        "ft-large-prompt-mml",
        "lora-warmup-large",
        "the 240-turn adapter shipped before, over the warm-up retriever; it was trained with whole "
        "records, the large-scale run with records cut at 48 tokens",
    ),
    SettingPair(
        "ft-large-prompt-mml-r104",
        "lora-warmup-large",
        "the 240-turn adapter shipped before, over the warm-up retriever; both trained with whole records",
    ),
    SettingPair(
        "ft-large-prompt-mml",
        "ft-prompt-mml-rerun-large",
        "the retrained prompt run, over its jointly trained retriever",
    ),
)


def pairings(rows: Iterable[Row] = ROWS) -> list[Pairing]:
    """PAIRINGS, each followed by itself again with a retrained run of ``rows`` (``Row.rerun_of``) in
    place of the run it retrains; then each retrained run against its first run (how far two runs of
    one command land apart)."""
    reruns = {row.name: row.rerun_of for row in rows if row.rerun_of}
    out: list[Pairing] = []
    for p in PAIRINGS:
        out.append(p)
        for rerun, first in reruns.items():
            if first in (p.first, p.second):
                name = (p.name_a if first == p.first else p.name_b).split(" (")[0]
                swapped = p._replace(detail=f"{p.detail}; {name}: the retrained run")
                out.append(
                    swapped._replace(first=rerun) if first == p.first else swapped._replace(second=rerun)
                )
    for rerun, first in reruns.items():
        # The first run first, so that "the first run" of a missing interval's note is the original.
        out.append(Pairing(first, rerun, "retraining", "the same command run again", "original", "retrained"))
    return out


def stated_pairs() -> list[tuple[str, str]]:
    """Every (first, second) pair of rows that quality.md compares, whichever kind of comparison: what
    run_local.py draws intervals for and the rows test checks against ROWS."""
    pairs = [(p.first, p.second) for p in pairings()]
    settings = [(p.first, p.second) for p in (*SETTING_PAIRS, *TRAIN_SETTING_PAIRS)]
    return [*pairs, *BACKBONE_PAIRS, *settings, *DROPOUT_PAIRS]
