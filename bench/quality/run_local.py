"""Rows of ``bench/results/quality.md`` for generators run in-process (`mktod evaluate --checkpoint`).

Each row is one evaluation of a trained checkpoint or of a pipeline file (configs/pipelines/*.yaml, the
untuned reference rows) on a test-set slice. A row whose output folder already holds ``run.json`` is
reused, so an interrupted run resumes; ``--rerun`` evaluates again. Writes the section
"Local generators (mktod evaluate --checkpoint)" of quality.md (other sections are kept),
``quality_local.json``, ``quality_dev_f1.png`` (dev Entity F1 over training steps, from each training
run's log.jsonl) and ``quality_dev_recall.png`` (the jointly trained retrievers' dev Recall@1).

``runs/`` is not kept between machines, so each row's record in ``quality_local.json`` holds everything
the section derives from the run (scores, the share columns, the most common responses, the dev curve,
the intervals) and its predictions are copied under ``bench/results/quality_local/``. A row whose run is
no longer on this machine is taken from that record instead of being dropped; a row evaluated again
replaces it.

    python bench/quality/run_local.py            # every row below
    python bench/quality/run_local.py --only camrest/ft-prompt-mml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mktod.datasets import DataPaths
from mktod.evaluate import compare_files
from mktod.paths import default_cache_dir, default_data_dir
from mktod.significance import PairedDifference
from mktod.sysinfo import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the rows table and findings beside this script
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # bench/, for mktod_cli
from findings import (
    Intervals,
    Results,
    ablation_lines,
    few_shot_lines,
    finding_lines,
    paired_runs,
    run_of,
    seq2seq_lines,
    setting_lines,
)
from mktod_cli import run_mktod
from quality_rows import (
    DATASET_NAMES,
    PAPER,
    PAPER_LARGE,
    ROWS,
    Row,
    stated_pairs,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SECTION = "## Local generators (mktod evaluate --checkpoint)"
RECORD = RESULTS / "quality_local.json"
KEPT = RESULTS / "quality_local"  # each row's predictions, so that intervals can be drawn again later


def out_dir(row: Row) -> Path:
    return ROOT / "runs" / "quality" / f"{row.dataset}-{row.split}-{row.name}"


def command(row: Row) -> list[str]:
    limit = [] if row.limit is None else ["--limit", str(row.limit)]
    return [
        "mktod",
        "evaluate",
        "--checkpoint",
        row.checkpoint,
        "--dataset",
        row.dataset,
        "--split",
        row.split,
        *limit,
        "--batch-size",
        str(row.batch_size),
        *row.options,
        "--out",
        str(out_dir(row).relative_to(ROOT)),
    ]


def evaluate(row: Row, rerun: bool) -> dict[str, Any] | None:
    run_json = out_dir(row) / "run.json"
    if not (ROOT / row.checkpoint).exists():
        print(f"skip {row.name}: {row.checkpoint} does not exist (train it first)", file=sys.stderr)
        return json.loads(run_json.read_text()) if run_json.is_file() else None
    if rerun or not run_json.is_file():
        run_mktod(command(row)[1:], capture=False, offline=False)  # its progress bars to the terminal
    run: dict[str, Any] = json.loads(run_json.read_text())
    return run


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; CPU only"


def responses(run: dict[str, Any]) -> list[str]:
    """A run's predicted responses (one per line of its predictions file), blank ones left out."""
    path = ROOT / str(run.get("predictions", ""))
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def distinct_share(lines: list[str]) -> float | None:
    """Share of distinct responses among a run's predictions (%): a model that ignores its input
    (the same answer to every turn) shows here before it shows in the scores."""
    return 100.0 * len(set(lines)) / len(lines) if lines else None


def _share(lines: list[str], test: Callable[[str], bool]) -> float | None:
    """Share (%) of a run's predictions for which ``test`` holds."""
    return 100.0 * sum(1 for line in lines if test(line)) / len(lines) if lines else None


def echoes_context(line: str) -> bool:
    """A response that speaks a dialogue turn's speaker tag (``user:``, as the context is written):
    it repeats the context or runs on into an invented next turn instead of ending."""
    return bool(re.search(r"\b(user|system) ?:", line))


def copies_record(line: str) -> bool:
    """A response that reproduces a record as the generator was given it: a meta-knowledge phrase or
    tag, or a linearised record (``name x ; area y ; ...``) instead of a reply."""
    return "recalled:" in line or "-entity>" in line or line.count(" ; ") >= 2


def predictions_file(record: dict[str, Any]) -> Path | None:
    """The predictions behind a record: the copy kept under bench/results, else the run's own file."""
    for key in ("kept_predictions", "predictions"):
        path = ROOT / str(record.get(key, ""))
        if record.get(key) and path.is_file():
            return path
    return None


def dev_curve(row: Row) -> dict[str, Any] | None:
    """Dev Entity F1 of a row's training run against the training turns seen (runs differ in turns
    per step, so steps would not compare); None when the run's log is not on this machine."""
    log = ROOT / row.train_run / "log.jsonl" if row.train_run else None
    if log is None or not log.is_file():
        return None
    config = yaml.safe_load((ROOT / row.train_run / "config.yaml").read_text(encoding="utf-8"))
    per_step = config["optim"]["batch_size"] * config["optim"]["grad_accum"]
    points: dict[int, float] = {}  # by step: the last entry wins (a resumed run redid that step)
    recall: dict[int, float] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "dev" in entry:
            turns = int(entry["step"]) * per_step
            points[turns] = float(entry["dev"]["entity_f1"])
            if "recall@1" in entry["dev"]:
                recall[turns] = float(entry["dev"]["recall@1"])
    if not points:
        return None
    limit = config["optim"]["eval_limit"]
    return {
        "dev_turns": "all dev turns" if limit is None else f"first {limit} dev turns",
        "points": sorted(points.items()),
        "recall@1": sorted(recall.items()),
    }


def measure(row: Row, run: dict[str, Any]) -> dict[str, Any]:
    """A row's record from its evaluation on this machine: the scores of ``run.json`` and what the
    section derives from the predictions and the training log. The predictions are copied under
    bench/results so that a later run of this script can still compare against this row."""
    said = responses(run)
    source = predictions_file(run)
    kept = KEPT / f"{row.dataset}-{row.split}-{row.name}.txt"
    if source is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, kept)
    curve = dev_curve(row)
    best = max(curve["points"], key=lambda p: p[1]) if curve else None
    return {
        "row": row.name,
        "label": row.label,
        **run,
        "kept_predictions": str(kept.relative_to(ROOT)) if source is not None else None,
        "shares": {
            "distinct": distinct_share(said),
            "echoes_context": _share(said, echoes_context),
            "copies_record": _share(said, copies_record),
        },
        "common_responses": [text for text, _ in Counter(said).most_common(2)],
        "dev_curve": curve,
        "dev_best": list(best) if best else None,
        "warmup_recall": warmup_recall(row),
        # A row scored elsewhere (bench/device/import_run.py: a lent GPU) says where; else this machine.
        "machine": run.get("machine") or machine(),
    }


@dataclass(frozen=True)
class Recorded:
    """What an earlier run of this script wrote to quality_local.json."""

    rows: dict[tuple[str, str], dict[str, Any]]  # (dataset, row name) -> record
    comparisons: dict[tuple[str, str, str], dict[str, Any]]  # (dataset, first, second) -> interval


def load_recorded(path: Path | None = None) -> Recorded:
    path = RECORD if path is None else path
    if not path.is_file():
        return Recorded({}, {})
    data = json.loads(path.read_text(encoding="utf-8"))
    return Recorded(
        {(r["dataset"], r["row"]): r for r in data["rows"]},
        {(c["dataset"], c["first"], c["second"]): c for c in data["comparisons"]},
    )


def table(dataset: str, setting: str, results: Results) -> list[str]:
    large = setting == "large"
    title = DATASET_NAMES.get(dataset, dataset) + (", large-scale KB" if large else "")
    lines = [
        f"### {title}",
        "",
        "| generator | training | turns | Entity F1 | BLEU | Recall@1 | "
        + ("Recall@7 | " if large else "")
        + "distinct responses | echoes context | copies a record | wall (s) |",
        "|---|---|---|---|---|---|" + ("---|" if large else "") + "---|---|---|---|",
    ]
    for row, r in results:
        if (row.dataset, r.get("setting", "condensed")) != (dataset, setting):
            continue
        shares = [r["shares"][key] for key in ("distinct", "echoes_context", "copies_record")]
        shown = " | ".join("" if v is None else f"{v:.0f}%" for v in shares)
        recall = f"{r['recall@1']:.2f} | " + (f"{r['recall@7']:.2f} | " if large else "")
        lines.append(
            f"| {row.label} | {'none' if row.training == 'none' else 'see below'} | {r['turns']} | "
            f"{r['entity_f1']:.2f} | {r['bleu']:.2f} | {recall}{shown} | {r['wall_s']:.0f} |"
        )
    if large:
        for label, f1, bleu, r7 in PAPER_LARGE.get(dataset, []):
            lines.append(
                f"| paper: {label} | full train set | all | {f1:.2f} | {bleu:.2f} | | {r7:.2f} | | | | |"
            )
    else:
        for label, f1, bleu in PAPER.get(dataset, []):
            lines.append(f"| paper: {label} | full train set | all | {f1:.2f} | {bleu:.2f} | | | | | |")
    return [*lines, ""]


def write_markdown(results: Results, intervals: Intervals) -> None:
    path = RESULTS / "quality.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Response quality\n"
    tables = {(row.dataset, str(r.get("setting", "condensed"))) for row, r in results}
    lines = [
        SECTION,
        "",
        "Generators run in-process by `mktod evaluate --checkpoint` on test sets, with each dialogue's own",
        "KB (condensed) unless a table says large-scale (the dataset-level KB, searched through a FAISS",
        "index); `turns` is how many system turns a row scored (the SmolLM2 rows: the first 100, at",
        "~2.5 s a turn on CPU). Greedy",
        "decoding. Retrievers: the dataset's warm-up retriever (`configs/retriever-{camrest,mwoz}.yaml`)",
        "or, for SMD, the bundled sentence encoder as it comes, for the untuned rows; the jointly trained",
        "one for the fine-tuned rows. Recall@1 is over the retrieved records of a condensed KB (CamRest",
        "and MWOZ retrieve 6, SMD 8 of at most 8); in a large-scale table Recall@1 and Recall@7 are over",
        "the 7 records retrieved from the whole dataset-level KB. *distinct responses*: the share of",
        "different responses among a row's predictions; a generator that ignores its input scores low.",
        "*echoes context*: the",
        "share of responses that contain a speaker tag (`user:`), i.e. repeat the dialogue context or run",
        "on into an invented next turn; *copies a record*: the share that reproduce a record as the",
        "generator was given it (a meta-knowledge phrase or tag, or `name x ; area y ; ...`).",
        "The SmolLM2 rows were generated before the causal generator learnt to cut an invented next",
        "turn (2026-12-02, `mktod/generators/reply.py`), so their predictions still hold it (*echoes",
        "context* counts the ones with `user:`); `--only NAME --rerun` evaluates a row again with the cut.",
        "",
    ]
    for dataset in dict.fromkeys(row.dataset for row, _ in results):
        for setting in ("condensed", "large"):
            if (dataset, setting) in tables:
                lines += table(dataset, setting, results)
    lines += [
        "Reading the tables: every fine-tuned row is a **short CPU run** (a few hundred to a few thousand",
        "training turns; the paper trains 1,500 steps of 64 turns on a GPU), so the rows prove each path",
        "end to end and show the direction of fine-tuning, not the method's ceiling. On 100 turns (a few",
        "dozen dialogues) a difference of a few points is often sampling noise; the intervals below say",
        "how much. The untuned SmolLM2 does",
        "not answer: with no meta knowledge it mostly repeats the dialogue context (*echoes context*),",
        "which scores the entities a reference repeats from the context; with the prompt rendering it",
        "copies the records it was given (*copies a record*; which is where its SMD Entity F1 comes",
        "from: the records hold the entities). Fine-tuning is what makes it reply. The paper's rows use",
        "the full test set and T5-Base (or ChatGPT).",
        *finding_lines(results),
        *few_shot_lines(openai_rows()),
        *ablation_lines(results, intervals),
        *setting_lines(results, intervals),
        *seq2seq_lines(results, intervals, context_use_rows()),
        *figure_lines(results),
        f"Machine: {'; '.join(dict.fromkeys(str(r.get('machine') or machine()) for _, r in results))}.",
        "",
        "Commands (evaluation, then how the generator was trained):",
        "",
    ]
    for row, r in results:
        lines.append(f"    {r.get('command') or ' '.join(command(row))}")
        if row.training != "none":
            lines.append(f"        trained by: {row.training}")
    section = "\n".join(lines) + "\n"
    head, _, rest = text.partition(SECTION)
    tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n\n" + section + ("\n" + tail if tail else ""), encoding="utf-8")


EARLIER_FIGURE = "quality_dev_f1_earlier.png"
RECALL_FIGURE = "quality_dev_recall.png"


def figure_lines(results: Results) -> list[str]:
    """The dev-F1 figure of the recorded curves, and the one drawn before curves were recorded."""
    out = [""]
    if dev_curves(results):
        out += ["![dev Entity F1 over training steps](quality_dev_f1.png)", ""]
    if dev_curves(results, "recall@1"):
        out += [f"![dev Recall@1 of the jointly trained retrievers over training steps]({RECALL_FIGURE})", ""]
    if (RESULTS / EARLIER_FIGURE).is_file():
        out += [
            "The dev curves of the runs trained before 2026-12, drawn from their training logs, which were",
            "not kept with the runs, so this script can no longer redraw them:",
            "",
            f"![dev Entity F1 of the earlier runs]({EARLIER_FIGURE})",
            "",
        ]
    return out


CONTEXT_USE = RESULTS / "context_use.jsonl"  # written by bench/quality/context_use.py --out


def context_use_rows() -> list[dict[str, Any]]:
    """Every measurement in context_use.jsonl (none when the file is missing)."""
    if not CONTEXT_USE.is_file():
        return []
    lines = CONTEXT_USE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def openai_rows() -> list[dict[str, Any]]:
    """The chat-LLM section's records (quality_openai.json, written by bench/openai/run_quality.py)."""
    path = RESULTS / "quality_openai.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    return rows


def warmup_recall(row: Row) -> dict[str, Any] | None:
    """Recall@K on the row's split of the retriever its training run started from: the run config's
    ``retriever.init`` (a warm-up run), or with ``init: null`` the sentence encoder as it comes; None
    when that is not on this machine. ``start`` names it for the sentence. Cached in runs/quality."""
    config = ROOT / row.train_run / "config.yaml" if row.train_run else None
    if config is None or not config.is_file():
        return None
    retriever = yaml.safe_load(config.read_text(encoding="utf-8")).get("retriever")
    if not retriever:  # no retriever section: nothing to compare the row's Recall@1 with
        return None
    init = retriever.get("init")
    if init:
        if not (ROOT / init / "final").is_dir():  # a finished warm-up only
            return None
        spec, start, cache_name = str(init), "the warm-up retriever", Path(init).name
    else:
        model = retriever["encoder"]["model"]  # config.yaml is the resolved config: always there
        spec, start, cache_name = f"encoder:{model}", f"the untuned sentence encoder ({model})", model
    cmd = ["mktod", "evaluate-retriever", "--setting", "condensed", "--split", row.split]
    cmd += ["--retriever", spec, "--dataset", row.dataset]
    cached = ROOT / "runs" / "quality" / f"{row.dataset}-{row.split}-{cache_name}.json"
    if not cached.is_file():
        text = run_mktod(cmd[1:], offline=False)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(text, encoding="utf-8")
    scores: dict[str, Any] = json.loads(cached.read_text(encoding="utf-8"))
    return {**scores, "command": " ".join(cmd), "start": start}


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> PairedDifference | None:
    """F1(a) - F1(b) with `mktod compare`'s paired bootstrap over the test dialogues; None when the
    two runs did not score the same turns or a predictions file is not here."""
    fa, fb = predictions_file(a), predictions_file(b)
    if (
        fa is None
        or fb is None
        or (a["dataset"], a["split"], a["turns"]) != (b["dataset"], b["split"], b["turns"])
    ):
        return None
    return compare_files(
        str(a["dataset"]),
        str(a["split"]),
        fa,
        fb,
        DataPaths(default_data_dir(), default_cache_dir()),
        limit=int(a["turns"]),
    ).difference


def compute_intervals(results: Results, recorded: Recorded) -> Intervals:
    """Every stated comparison's interval: bootstrapped from the two predictions files when both are
    here, else the recorded one, provided both rows still have the scores it was drawn from."""
    out: Intervals = {}
    for first, second in stated_pairs():
        for dataset, a, b in paired_runs(results, first, second):
            d = paired_difference(a, b)
            c = recorded.comparisons.get((dataset, first, second))
            if (
                d is None
                and c is not None
                and (c["f1_first"], c["f1_second"]) == (a["entity_f1"], b["entity_f1"])
            ):
                d = PairedDifference(*(c[f.name] for f in fields(PairedDifference)))
            if d is not None:
                out[(dataset, first, second)] = d
    return out


def interval_records(intervals: Intervals, results: Results) -> list[dict[str, Any]]:
    return [
        {
            "dataset": dataset,
            "first": first,
            "second": second,
            "f1_first": run_of(results, dataset, first)["entity_f1"],  # type: ignore[index]
            "f1_second": run_of(results, dataset, second)["entity_f1"],  # type: ignore[index]
            **asdict(d),
        }
        for (dataset, first, second), d in intervals.items()
    ]


Curves = dict[str, dict[str, list[tuple[int, float]]]]  # dataset name -> row label -> (turns, value)


def dev_curves(results: Results, key: str = "points") -> Curves:
    """Each row's recorded dev curve, grouped by dataset and labelled for the plot: ``key`` "points"
    (Entity F1) or "recall@1" (the jointly trained retriever's dev Recall@1; rows without it are left
    out)."""
    out: Curves = {}
    for row, r in results:
        if r.get("dev_curve") and r["dev_curve"].get(key):
            label = f"{row.label} ({r['dev_curve']['dev_turns']})"
            points = [(int(t), float(f)) for t, f in r["dev_curve"][key]]
            out.setdefault(DATASET_NAMES.get(row.dataset, row.dataset), {})[label] = points
    return out


def plot(curves: Curves, path: Path, ylabel: str = "dev Entity F1") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One panel per dataset, so that each dataset's runs share a scale and a colour set (tab20: up to
    # 20 runs a panel). Runs span 60 to 3,200 training turns: a log axis keeps the short ones readable.
    # Each panel's legend gets its own row of the grid below it, sized to its lines, so that it covers
    # no curve and no label.
    heights = [h for runs in curves.values() for h in (2.6, 0.25 + 0.17 * len(runs))]
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(8.0, sum(heights)), height_ratios=heights, layout="constrained"
    )
    colours = plt.get_cmap("tab20")
    for i, (dataset, runs) in enumerate(curves.items()):
        ax, legend = axes[2 * i], axes[2 * i + 1]
        for j, (label, points) in enumerate(runs.items()):
            xs, ys = [s for s, _ in points], [f for _, f in points]
            ax.plot(xs, ys, marker="o", label=label, color=colours(j % 20))
        ax.set_xscale("log")
        ax.set_xlabel("training turns seen (steps x turns per step, log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset}: short CPU training runs")
        ax.grid(alpha=0.3, which="both")
        legend.axis("off")
        legend.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="upper left", frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only", nargs="*", help="rows to (re)evaluate, NAME or DATASET/NAME; the table still lists all"
    )
    ap.add_argument("--rerun", action="store_true", help="evaluate even when run.json exists")
    args = ap.parse_args()
    recorded = load_recorded()
    results: Results = []
    for row in ROWS:
        selected = not args.only or row.name in args.only or f"{row.dataset}/{row.name}" in args.only
        run = evaluate(row, args.rerun and selected) if selected else None
        if run is None and (out_dir(row) / "run.json").is_file():
            run = json.loads((out_dir(row) / "run.json").read_text())
        record = measure(row, run) if run is not None else recorded.rows.get((row.dataset, row.name))
        if record is not None:
            results.append((row, record))
    intervals = compute_intervals(results, recorded)
    write_markdown(results, intervals)
    RECORD.write_text(
        json.dumps(
            {
                "rows": [r for _, r in results],
                "comparisons": interval_records(intervals, results),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    curves = dev_curves(results)
    if curves:
        plot(curves, RESULTS / "quality_dev_f1.png")
    recall = dev_curves(results, "recall@1")
    if recall:
        plot(recall, RESULTS / RECALL_FIGURE, "dev Recall@1 of the jointly trained retriever")
    print((RESULTS / "quality.md").read_text(encoding="utf-8").partition(SECTION)[2][:3000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
