"""The prose of quality.md's local-generator section, written from the numbers (run_local.py).

Pure functions of the results: each takes the evaluated rows (and the intervals, or other records
run_local.py has read) and returns the lines of one finding, so that no sentence in quality.md states
a number or a verdict that its row does not.
"""

from __future__ import annotations

from typing import Any

from quality_rows import (
    BACKBONE_PAIRS,
    BACKBONE_START,
    BACKBONES,
    DATASET_NAMES,
    DROPOUT_PAIRS,
    KB_ROWS,
    SETTING_PAIRS,
    TRAIN_SETTING_PAIRS,
    Row,
    pairings,
)

from mktod.significance import PairedDifference

Results = list[tuple[Row, dict[str, Any]]]
Intervals = dict[tuple[str, str, str], PairedDifference]


def run_of(results: Results, dataset: str, name: str) -> dict[str, Any] | None:
    """The run of row ``name`` on ``dataset``, if the results hold it."""
    return next((r for row, r in results if (row.dataset, row.name) == (dataset, name)), None)


def paired_runs(
    results: Results, first: str, second: str
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dataset, run of row ``first``, run of row ``second``) for every dataset that has both rows."""
    out = []
    for dataset in dict.fromkeys(row.dataset for row, _ in results):
        a, b = run_of(results, dataset, first), run_of(results, dataset, second)
        if a is not None and b is not None:
            out.append((dataset, a, b))
    return out


def finding_lines(results: Results) -> list[str]:
    """What fine-tuning did to each dataset's SmolLM2 with the prompt rendering, from the numbers."""
    out: list[str] = []
    for dataset, zs, ft in paired_runs(results, "zs-prompt", "ft-prompt-mml"):
        out.append(
            f"{DATASET_NAMES.get(dataset, dataset)}, SmolLM2 with prompt meta knowledge: untuned "
            f"{zs['entity_f1']:.2f} / {zs['bleu']:.2f}, fine-tuned {ft['entity_f1']:.2f} / {ft['bleu']:.2f} "
            "(Entity F1 / BLEU, same turns)."
        )
    return ["", *out] if out else []


def few_shot_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The few-shot SmolLM2 reference rows (issue #7 item 5) live in the chat-LLM section: the same
    model with in-context demonstrations, no fine-tuning. Point at them (``rows``: the records of
    quality_openai.json) with their numbers."""
    if not rows:
        return []
    parts = [
        f"{DATASET_NAMES.get(r['dataset'], r['dataset'])} {r['meta']} {r['entity_f1']:.2f} / {r['bleu']:.2f}"
        for r in rows
    ]
    demos = sorted({int(r["demos"]) for r in rows})
    turns = sorted({int(r["turns"]) for r in rows})
    return [
        "",
        f"Few-shot SmolLM2 (no fine-tuning, {'/'.join(map(str, demos))} in-context "
        f"demonstration{'' if demos == [1] else 's'} per turn, "
        f"first {'/'.join(map(str, turns))} test turns; the Q4_1 GGUF served by llama.cpp, see the "
        f"chat-LLM section above): {', '.join(parts)} (Entity F1 / BLEU).",
    ]


def interval_text(d: PairedDifference | None) -> str:
    if d is None:
        return ""
    return f"; Entity F1 difference {d.difference:+.2f}, 95% interval [{d.low:+.2f}, {d.high:+.2f}]"


def missing_interval(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Why a comparison has no paired-bootstrap interval (compute_intervals found none)."""
    if (a["split"], a["turns"]) != (b["split"], b["turns"]):
        return "no interval: the runs scored different turns"
    kept = [r for r in (a, b) if r.get("kept_predictions")]
    if len(kept) == 1:  # rows measured before predictions were kept (on another machine)
        gone = "first" if kept[0] is b else "second"
        return f"no interval: the {gone} run's predictions were not kept"
    return "no interval: the predictions of the runs were not kept"


def setting_lines(results: Results, intervals: Intervals) -> list[str]:
    """The same trained parts on each dialogue's own KB and on the dataset-level KB; then the same
    generator config trained on large-scale retrievals against condensed ones, both scored large-scale."""
    out: list[str] = []
    for first, second, parts in SETTING_PAIRS:
        for dataset, a, b in paired_runs(results, first, second):
            d = intervals.get((dataset, first, second))
            trained = any(run_of(results, dataset, p.first) is not None for p in TRAIN_SETTING_PAIRS)
            out += [
                "",
                f"{DATASET_NAMES.get(dataset, dataset)} KB setting ({parts}): "
                f"condensed (k = {a['k']}) {a['entity_f1']:.2f} / {a['bleu']:.2f}, "
                f"large-scale (K = {b['k']}) {b['entity_f1']:.2f} / {b['bleu']:.2f} (Entity F1 / BLEU)"
                f"{interval_text(d)}; "
                f"Recall@1 {a['recall@1']:.2f} vs {b['recall@1']:.2f}, Recall@{b['k']} "
                f"{a['recall@7']:.2f} vs {b['recall@7']:.2f}. The generator was fine-tuned on condensed "
                "retrievals only; "
                + (
                    "the next comparison trains the same config on large-scale ones."
                    if trained
                    else "large-scale training (configs/*-large-*.yaml) is what the paper's large-scale "
                    "rows measure."
                ),
            ]
    for first, second, parts in TRAIN_SETTING_PAIRS:
        for dataset, a, b in paired_runs(results, first, second):
            d = intervals.get((dataset, first, second))
            note = interval_text(d) if d is not None else f"; {missing_interval(a, b)}"
            out += [
                "",
                f"{DATASET_NAMES.get(dataset, dataset)} training KB setting (SmolLM2 + LoRA, prompt, "
                "NLL + MML, the same training turns, learning rates and seed; both scored on the "
                f"dataset-level KB, K = {a['k']}): "
                f"trained on top-{a['k']} retrievals from the dataset-level KB (its retriever trained "
                f"jointly) {a['entity_f1']:.2f} / {a['bleu']:.2f}, trained on each dialogue's own KB "
                f"({parts}) {b['entity_f1']:.2f} / {b['bleu']:.2f} "
                f"(Entity F1 / BLEU){note}; Recall@1 {a['recall@1']:.2f} vs {b['recall@1']:.2f}, "
                f"Recall@{a['k']} {a['recall@7']:.2f} vs {b['recall@7']:.2f}.",
            ]
    return out


def seq2seq_lines(results: Results, intervals: Intervals, measured: list[dict[str, Any]]) -> list[str]:
    """What each short seq2seq (FiD) run learned, from its numbers, its predictions and its log; then
    the two offline backbones side by side (issue #4 item 7). ``measured``: the context_use.jsonl
    records (how much each checkpoint reads its input)."""
    runs = [(row, r) for row, r in results if row.backbone]
    out: list[str] = []
    for row, r in runs:
        distinct = r["shares"]["distinct"]
        common = ", ".join(repr(t) for t in r["common_responses"])
        out += [
            "",
            f"{DATASET_NAMES.get(row.dataset, row.dataset)}, Fusion-in-Decoder over "
            f"{BACKBONES[row.backbone]}, on {r['turns']} test turns: {r['entity_f1']:.2f} / {r['bleu']:.2f}"
            f"{'' if distinct is None else f', with {distinct:.0f}% distinct responses'} (most often "
            f"{common}). {BACKBONE_START[row.backbone]}",
        ]
        warm = r.get("warmup_recall")
        if warm is not None:
            k, size = int(r["k"]), KB_ROWS.get(row.dataset)
            direction = "below" if r["recall@1"] < warm["recall@1"] else "not below"
            chance = ""
            if size is not None and k < size:  # a random order puts a gold row in the top k this often
                chance = (
                    f" ({k} of {size} rows retrieved: a random order gives Recall@{k} {100 * k / size:.2f})"
                )
            out.append(
                f"Its retriever, trained jointly, has Recall@1 {r['recall@1']:.2f} and Recall@{k} "
                f"{r['recall@7']:.2f} on these turns{chance}, {direction} "
                f"{warm.get('start', 'the warm-up retriever')} it started from "
                f"(Recall@1 {warm['recall@1']:.2f}, Recall@5 {warm['recall@5']:.2f}; "
                f"`{warm['command']}`)."
            )
        curve = r.get("dev_curve") or {}
        recall = curve.get("recall@1") or []
        if recall:
            trace = ", ".join(f"{v:.0f}" for _, v in recall)
            out.append(f"Dev Recall@1 at each evaluation ({curve['dev_turns']}): {trace}.")
        if r.get("dev_best"):
            turns, f1 = r["dev_best"]
            out.append(
                f"Its dev Entity F1 peaked at {f1:.2f} after {turns} training turns "
                "(the checkpoint scored here)."
            )
        use = context_use(row.checkpoint, measured)
        if use is not None:
            out.append(
                f"Reading its input: on the first {use['turns']} {use['split']} turns this checkpoint gives "
                f"the gold response {use['gap_input']:+.2f} nats with its own input over another "
                f"dialogue's, {use['gap_records']:+.2f} over the context alone ({CONTEXT_USE_TABLE})."
            )
    out += backbone_lines(runs, intervals)
    out += dropout_lines(runs, intervals)
    return out


CONTEXT_USE_TABLE = "bench/results/context_use.md"  # bench/quality/context_use.py writes it


def context_use(checkpoint: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest of ``rows`` measuring ``checkpoint`` (a dev split preferred), if any."""
    mine = [r for r in rows if r.get("checkpoint") == checkpoint]
    dev = [r for r in mine if r.get("split") == "dev"]
    return (dev or mine)[-1] if mine else None


def dropout_lines(runs: Results, intervals: Intervals) -> list[str]:
    """The same seq2seq run with and without dropout in MML's single-record likelihoods."""
    out: list[str] = []
    for first, second in DROPOUT_PAIRS:
        for dataset, a, b in paired_runs(runs, first, second):
            d = intervals.get((dataset, first, second))
            kept = a["recall@1"] - b["recall@1"]
            # Several backbones have such a pair: name it (the label's first part, e.g. "T5-small from
            # scratch FiD") so that the sentences tell apart.
            label = next(row.label for row, _ in runs if row.name == first and row.dataset == dataset)
            out += [
                "",
                f"{DATASET_NAMES.get(dataset, dataset)} {label.split(',')[0]}, MML's likelihoods without "
                "dropout (`loss.mml_dropout: false`, the default) against with dropout (the runs before the "
                f"option), same config otherwise: Entity F1 / BLEU {a['entity_f1']:.2f} / {a['bleu']:.2f} "
                f"against {b['entity_f1']:.2f} / {b['bleu']:.2f}{interval_text(d)}; the jointly trained "
                f"retriever's test Recall@1 {a['recall@1']:.2f} against {b['recall@1']:.2f} ({kept:+.2f}).",
            ]
    return out


def backbone_lines(runs: Results, intervals: Intervals) -> list[str]:
    """The offline backbones compared on the same dataset, steps and seed (issue #4 item 7)."""
    out: list[str] = []
    for first, second in BACKBONE_PAIRS:
        for dataset, a, b in paired_runs(runs, first, second):
            d = intervals.get((dataset, first, second))
            if d is None:
                ahead = "from-scratch T5" if a["entity_f1"] > b["entity_f1"] else "BERT2BERT"
                verdict = (
                    f"the {ahead} backbone is ahead on Entity F1, with no interval (the predictions of "
                    "one run were not kept)"
                )
            elif d.excludes_zero:
                verdict = f"the {'from-scratch T5' if d.difference > 0 else 'BERT2BERT'} backbone is ahead"
            else:
                verdict = "the interval includes 0: this test set does not tell the backbones apart"
            out += [
                "",
                f"{DATASET_NAMES.get(dataset, dataset)} seq2seq backbones (same data, records, meta "
                f"knowledge, losses, steps and seed): T5 from scratch {a['entity_f1']:.2f} / "
                f"{a['bleu']:.2f}, "
                f"BERT2BERT {b['entity_f1']:.2f} / {b['bleu']:.2f} (Entity F1 / BLEU){interval_text(d)}; "
                f"{verdict}.",
            ]
            out += backbone_consequences(a, b)
    return out


def backbone_consequences(t5: dict[str, Any], b2b: dict[str, Any]) -> list[str]:
    """What the backbone comparison means for the defaults and for the joint retriever's fall."""
    better = "BERT2BERT" if b2b["entity_f1"] >= t5["entity_f1"] else "the from-scratch T5"
    out = [
        f"By Entity F1 {better} is the better offline seq2seq backbone here"
        + (
            ", and it stays the one the seq2seq configs (configs/*-{prefix,prompt,ctr}.yaml) name."
            if better == "BERT2BERT"
            else "; the seq2seq configs (configs/*-{prefix,prompt,ctr}.yaml) still name BERT2BERT."
        )
    ]
    warm = [r["warmup_recall"]["recall@1"] for r in (t5, b2b) if r.get("warmup_recall")]
    if warm and all(r["recall@1"] < min(warm) - 20 for r in (t5, b2b)):
        out.append(
            f"Both jointly trained retrievers fell far below the warm-up retriever they started from "
            f"(test Recall@1 {t5['recall@1']:.2f} and {b2b['recall@1']:.2f} against "
            f"{' / '.join(f'{w:.2f}' for w in warm)}), whichever backbone. These runs computed MML's "
            "single-record likelihoods with dropout, whose noise (a spread of several nats across a "
            "turn's records) the posterior follows: see README, \"MML's likelihoods are computed "
            'without dropout".'
        )
    return out


RETRAINED = [
    "A row marked *(retrained)* ran its first run's training command again into another folder, on a",
    "machine that kept its predictions: each comparison of the first run is stated again with it, with",
    "an interval where the first run has none, and its *retraining* line sets the two runs side by side",
    "(training is not bit-reproducible across machines, so that is how far two runs of one command land",
    "apart).",
]


def ablation_lines(results: Results, intervals: Intervals) -> list[str]:
    """One sentence per comparison of pairings() and dataset, from the numbers, with the Entity F1
    difference and its paired-bootstrap interval; then what the intervals say together."""
    out: list[str] = []
    apart: list[str] = []  # comparisons whose interval excludes 0
    counted = 0
    for p in pairings(row for row, _ in results):
        for dataset, a, b in paired_runs(results, p.first, p.second):
            name = DATASET_NAMES.get(dataset, dataset)
            d = intervals.get((dataset, p.first, p.second))
            note = interval_text(d) if d is not None else f"; {missing_interval(a, b)}"
            if d is not None:
                counted += 1
                if d.excludes_zero:
                    ahead = (p.name_a if d.difference > 0 else p.name_b).split(" (")[0]
                    apart.append(f"{name} {p.topic} ({ahead} ahead)")
            out.append(
                f"{name} {p.model} {p.topic} ({p.detail}): {p.name_a} {a['entity_f1']:.2f} / "
                f"{a['bleu']:.2f}, {p.name_b} {b['entity_f1']:.2f} / {b['bleu']:.2f} (Entity F1 / BLEU)"
                f"{note}; Recall@1 {a['recall@1']:.2f} vs {b['recall@1']:.2f}."
            )
    if not out:
        return []
    if not apart:
        verdict = [
            f"None of the {counted} Entity F1 intervals excludes 0: at this scale (short CPU runs, see",
            "the commands) the runs do not tell MML from NLL only, or one rendering from the other; the",
            "full-size runs of configs/*-{prefix,prompt,ctr}{,-smollm2}.yaml are what can confirm or",
            "contradict the paper's direction.",
        ]
    else:
        verdict = [
            f"{len(apart)} of the {counted} Entity F1 intervals exclude 0: {', '.join(apart)}.",
            f"Of {counted} comparisons at 95%, {0.05 * counted:.2f} would exclude 0 by chance alone on",
            "average, and these are short CPU runs (see the commands); the full-size runs of",
            "configs/*-{prefix,prompt,ctr}{,-smollm2}.yaml are what can confirm or contradict the paper's",
            "direction (MML above NLL only, meta knowledge above none).",
        ]
    return [
        "",
        *out,
        "",
        "Each difference is the first run minus the second, with a 95% interval from a paired",
        "bootstrap over the test dialogues (2000 redraws of whole dialogues; `mktod compare`). Without",
        "MML the retriever gets no gradient, so its Recall@1 is that of the retriever the run started from.",
        *(RETRAINED if any(row.rerun_of for row, _ in results) else []),
        *verdict,
    ]
